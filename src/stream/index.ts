/** Detection-event stream over ZeroMQ: framing, producer, consumer. See ./frame.ts for the wire format. */
export * from './frame.ts';
export * from './publisher.ts';
export * from './consumer.ts';
