export { Channel, RemoteError } from './channel.js';
export type { ChannelEvents, Handler, HandlerContext, ReceiveOptions, RequestOptions } from './channel.js';
export type { Codec, CodecOption } from './codec.js';
export { ChannelServer, connect, listen } from './socket.js';
export type { ChannelServerEvents, ConnectOptions, ListenOptions } from './socket.js';
export { channelPair, openChannel } from './pair.js';
export type { ChannelHandle, OpenOptions, PairOptions } from './pair.js';
export { DEFAULT_CAPACITY } from './options.js';
