/** The orders the client sends and the quotes the server answers with (plain objects: structured clone carries them). */

export interface Order {
  id: number;
  sku: string;
  quantity: number;
  tier: 'retail' | 'trade';
}

export interface Quote {
  id: number;
  sku: string;
  unitCents: number;
  discountCents: number;
  totalCents: number;
}

/** Unit prices in cents. */
const CATALOG: Readonly<Record<string, number>> = {
  'BOLT-M6': 12,
  'NUT-M6': 5,
  'WASHER-M6': 2,
  'HINGE-80': 349,
  'BRACKET-L': 189,
};

export const SKUS = Object.keys(CATALOG);

/** Prices an order: 5% off from 100 pieces, 10% more off for trade customers. Throws UNKNOWN_SKU. */
export function price(order: Order): Quote {
  const unitCents = CATALOG[order.sku];
  if (unitCents === undefined) {
    throw Object.assign(new Error(`no such SKU: ${order.sku}`), { code: 'UNKNOWN_SKU' });
  }
  const gross = unitCents * order.quantity;
  const percent = (order.quantity >= 100 ? 5 : 0) + (order.tier === 'trade' ? 10 : 0);
  const discountCents = Math.round((gross * percent) / 100);
  return { id: order.id, sku: order.sku, unitCents, discountCents, totalCents: gross - discountCents };
}
