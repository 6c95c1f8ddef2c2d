/**
 * Key delivery: ETSI GS QKD 004 push mode (node side) and the reference KMS with ETSI GS QKD 014.
 * See docs/delivery.md.
 */
export { startDeliveryNode, DeliveryNode, indexRanges, type DeliveryNodeOptions, type DeliveryMetrics, type PeerLink,
  type Capabilities, type Alarm } from './node.ts';
export { startKms, Kms, type KmsOptions, type KmsMetrics } from './kms.ts';
export { loadKmsConfig, readKeyFile, type KmsFileConfig } from './config.ts';
export { makePki, type Pki, type Identity } from './pki.ts';
export { deriveKeyId, deriveReformattedKeyId } from './keyid.ts';
export { commit, checkCommitment, keyDigest } from './commitment.ts';
export { STATUS, type Qos, type QosRequest, type Provenance } from './types.ts';
export type { TlsConfig, Endpoint } from './http.ts';
