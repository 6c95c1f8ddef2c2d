/**
 * One error base class for the whole node. Every error has a stable string `code` a caller can
 * switch on, a message that says what was wrong and what to do, and optionally a `cause`.
 * Messages never carry key material: callers pass lengths, indices and ids, never bytes.
 */
export class QkdError extends Error {
  readonly code: string;
  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
    this.name = new.target.name;
  }
}

/** Bad configuration or profile: names the file, the field and what was expected. */
export class ConfigError extends QkdError {}
/** A transport (serial line, USB, socket) failed or went away. */
export class TransportError extends QkdError {}
/** The peer spoke but what it said was malformed or out of protocol. */
export class ProtocolError extends QkdError {}
/** A device refused or could not do what was asked (out of range, not ready). */
export class DeviceError extends QkdError {}
/** Something did not answer in time. */
export class TimeoutError extends QkdError {}
/** Authentication failed, tampering detected, or a security policy refused: fail closed. */
export class SecurityError extends QkdError {}
