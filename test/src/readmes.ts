/**
 * The JavaScript and TypeScript examples of the README files, as programs.
 *
 * Every ```js / ```ts block of a README is either run by the install test
 * or opens with a visible `// not run: <why>` line. A block that runs is one
 * or more files, each opened by a line `// <file>.mjs`; a file whose line
 * adds `, in another process` runs as a process of its own, after the first
 * file's process has made what it listens on. Files the README does not
 * repeat the first file's imports in get them. What each process prints is
 * listed in EXPECTED, so a README whose example changes fails here until
 * the expectation is changed with it.
 */
import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as path from 'node:path';

/** The READMEs whose examples are checked, relative to the workspace root. */
export const READMES = [
  'README.md',
  'packages/core/README.md',
  'packages/futex/README.md',
  'packages/ringbuf/README.md',
  'packages/channel/README.md',
];

/**
 * What each example's processes print, by `<readme>#<index of the block>`,
 * in the order they start (the first file, then each `in another process`).
 */
export const EXPECTED: Record<string, string[]> = {
  'README.md#0': ["event: { viewed: 'B-2' }\n", "{ sku: 'A-1', total: 10 }\n"],
  'README.md#1': ['', 'hello\n'],
  'packages/channel/README.md#0': ['', 'HELLO\n'],
  'packages/channel/README.md#1': ['6\n'],
  'packages/ringbuf/README.md#4': ['one two three lost 0\none two three lost 0\n'],
  'packages/ringbuf/README.md#5': ["{ '1': 100, '2': 100, '3': 100 }\n"],
};

export interface Example {
  /** `<readme>#<index>`. */
  id: string;
  /** Each file: its name, source, and whether it runs as a process of its own. */
  files: Array<{ name: string; source: string; process: boolean }>;
}

const NOT_RUN = /^\/\/ not run: \S/;
const FILE = /^\/\/ ([\w-]+\.mjs)(, in another process)?$/;

/** The js/ts code blocks of a Markdown text, in order. */
export function codeBlocks(markdown: string): string[] {
  const blocks: string[] = [];
  for (const m of markdown.matchAll(/^```(js|ts|javascript|typescript)\n([\s\S]*?)^```$/gm)) blocks.push(m[2]!);
  return blocks;
}

/** The examples of one README that run; throws for a block that neither runs nor says why. */
export function examples(root: string, readme: string): Example[] {
  const runs: Example[] = [];
  for (const [index, block] of codeBlocks(fs.readFileSync(path.join(root, readme), 'utf8')).entries()) {
    const id = `${readme}#${index}`;
    const lines = block.split('\n');
    if (NOT_RUN.test(lines[0]!)) {
      assert.ok(!(id in EXPECTED), `${id} is marked "not run" but has an expected output`);
      continue;
    }
    assert.ok(FILE.test(lines[0]!), `${id} neither opens with '// <file>.mjs' nor with '// not run: <why>'`);
    assert.ok(id in EXPECTED, `${id} runs but has no expected output in test/src/readmes.ts`);
    const files: Example['files'] = [];
    for (const line of lines) {
      const header = FILE.exec(line);
      if (header) files.push({ name: header[1]!, source: '', process: files.length === 0 || header[2] !== undefined });
      files.at(-1)!.source += `${line}\n`;
    }
    const imports = files[0]!.source.split('\n').filter((l) => l.startsWith('import '));
    for (const file of files.slice(1)) {
      const missing = imports.filter((l) => !file.source.includes(l));
      if (missing.length > 0 && file.process) file.source = `${missing.join('\n')}\n${file.source}`;
    }
    assert.equal(files.filter((f) => f.process).length, EXPECTED[id]!.length, `${id}: processes vs expected outputs`);
    runs.push({ id, files });
  }
  return runs;
}
