import pino, { type Logger } from 'pino';

export type { Logger };

/** Structured JSON logs on stdout: journald keeps them, operators grep them. */
export function createLogger(level: string = 'info'): Logger {
  return pino({
    level,
    base: { service: 'cgwatchdog' },
    timestamp: pino.stdTimeFunctions.isoTime,
    // Secrets never reach the log, even if a caller passes a sink config or headers by mistake.
    redact: {
      paths: ['*.headers.authorization', '*.headers.Authorization', '*.bearerToken', '*.secret', 'headers.authorization', 'headers.Authorization'],
      censor: '[redacted]',
    },
  });
}

/** A logger that drops everything, for tests and one-shot commands that print their own output. */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}
