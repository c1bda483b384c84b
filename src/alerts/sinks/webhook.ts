import type { SinkConfig } from '../../config/schema';
import type { Alert } from '../alert';
import { postBody, postOptionsFor, type SendOutcome, type Sink } from './http-post';

/** The generic webhook body is the Alert itself (documented in README.md). */
export function webhookBody(alert: Alert): Buffer {
  return Buffer.from(JSON.stringify(alert), 'utf8');
}

export class WebhookSink implements Sink {
  constructor(
    readonly name: string,
    readonly config: SinkConfig,
  ) {}

  send(alert: Alert, signal?: AbortSignal): Promise<SendOutcome> {
    const headers = { 'Content-Type': 'application/json', 'Idempotency-Key': alert.idempotencyKey };
    return postBody(postOptionsFor(this.config, this.config.url, webhookBody(alert), headers, signal));
  }
}
