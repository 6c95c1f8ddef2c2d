/** The authenticated Alice<->Bob classical channel. Design and protocol: docs/channel.md. */
export { AuthChannel, type ChannelOptions, type ChannelStats, type Handler, type HandlerContext, type RequestOptions } from './channel.ts';
export { BlockLedger, type LedgerState } from './ledger.ts';
export { CHANNEL_VERSION, KIND, decodeAad, encodeAad, type Aad, type Kind } from './wire.ts';
export { Authenticator, directionOf, type AuthStats, type Role } from '../core/auth.ts';
