import fs from 'node:fs';
import pino, { type Logger } from 'pino';

export type { Logger };

/**
 * The same line for the same subject at most this often: a fork bomb or an OOM storm must not
 * flood the journal, which drops lines itself when flooded (journald's RateLimitBurst) and
 * would drop the one that mattered with the rest. What is held back is summarised, counted.
 */
export const LOG_BURST = 20;
export const LOG_WINDOW_MS = 10_000;
/**
 * The same line across all subjects at most this often: an OOM storm over thousands of
 * containers is a few lines each, under the per-subject burst, and would still pass
 * journald's RateLimitBurst (10,000 per 30 s by default) and take the daemon's other lines
 * with it.
 */
export const LOG_MESSAGE_BURST = 200;

/** Marks the limiter's own summary lines (a symbol key: pino does not print it). */
const SUMMARY = Symbol('log summary');

/** Which subject a line is about: the same message about another cgroup is another fact. */
function subjectOf(obj: unknown): string {
  if (!obj || typeof obj !== 'object') return '';
  const o = obj as Record<string, unknown>;
  return String(o.cgroup ?? o.id ?? o.sink ?? o.path ?? '');
}

/** pino's logMethod hook: counts lines per (level, message, subject) and holds back bursts. */
function rateLimiter(): { hook: (this: Logger, args: unknown[], method: (...a: unknown[]) => void, level: number) => void; flush: (log: Logger) => void } {
  let window = new Map<string, { n: number; level: number; msg: string; subject: string }>();
  let perMessage = new Map<string, { shown: number; held: number; level: number; msg: string; subjects: Set<string> }>();
  return {
    hook(args, method, level) {
      const first = args[0];
      // Info and below are one line per event the daemon acts on (a container found, a limit
      // written): counting them too kept a map entry per container per window (+20 MB RSS at
      // 5,000 containers, measured). Storms are warnings and errors.
      if (level < 40 || (first && typeof first === 'object' && SUMMARY in first)) return method.apply(this, args);
      const msg = typeof args[args.length - 1] === 'string' ? (args[args.length - 1] as string) : '';
      const subject = args.length > 1 ? subjectOf(args[0]) : '';
      const key = `${level}\0${msg}\0${subject}`;
      const seen = window.get(key) ?? { n: 0, level, msg, subject };
      seen.n++;
      window.set(key, seen);
      if (seen.n > LOG_BURST) return;
      const mkey = `${level}\0${msg}`;
      const m = perMessage.get(mkey) ?? { shown: 0, held: 0, level, msg, subjects: new Set<string>() };
      perMessage.set(mkey, m);
      if (m.shown < LOG_MESSAGE_BURST) {
        m.shown++;
        method.apply(this, args);
        return;
      }
      // Held back here, not by the per-subject burst: counted once, in this summary only.
      seen.n--;
      m.held++;
      // A bounded sample of subjects: the summary must not grow with the storm.
      if (m.subjects.size < 10) m.subjects.add(subject);
    },
    flush(log) {
      const last = window;
      window = new Map();
      const lastMessages = perMessage;
      perMessage = new Map();
      for (const m of lastMessages.values()) {
        if (m.held === 0) continue;
        const fields = { [SUMMARY]: true, repeatedMsg: m.msg, suppressed: m.held, acrossSubjects: true, someSubjects: [...m.subjects].filter(Boolean), windowMs: LOG_WINDOW_MS };
        if (m.level >= 50) log.error(fields, 'log lines suppressed (repeats)');
        else log.warn(fields, 'log lines suppressed (repeats)');
      }
      for (const s of last.values()) {
        if (s.n <= LOG_BURST) continue;
        // Marked: a summary is never itself held back.
        const fields = { [SUMMARY]: true, repeatedMsg: s.msg, subject: s.subject || undefined, suppressed: s.n - LOG_BURST, windowMs: LOG_WINDOW_MS };
        if (s.level >= 50) log.error(fields, 'log lines suppressed (repeats)');
        else if (s.level >= 40) log.warn(fields, 'log lines suppressed (repeats)');
        else log.info(fields, 'log lines suppressed (repeats)');
      }
    },
  };
}

/** Structured JSON logs on stdout: journald keeps them, operators grep them. */
export function createLogger(level: string = 'info', destination?: pino.DestinationStream): Logger {
  const limiter = rateLimiter();
  const opts: pino.LoggerOptions = {
    level,
    base: { service: 'cgwatchdog' },
    timestamp: pino.stdTimeFunctions.isoTime,
    // Secrets never reach the log, even if a caller passes a sink config or headers by mistake.
    redact: {
      paths: ['*.headers.authorization', '*.headers.Authorization', '*.bearerToken', '*.secret', 'headers.authorization', 'headers.Authorization'],
      censor: '[redacted]',
    },
    hooks: {
      logMethod(args, method, lvl) {
        limiter.hook.call(this, args, method as (...a: unknown[]) => void, lvl);
      },
    },
  };
  // pino's own (asynchronous) stdout: a synchronous write per line made the first container
  // after start wait ~1 s for its limit in user-mode Linux, where every syscall is slow.
  if (!destination && stdoutIsJournal()) {
    const out = pino.destination(1);
    destination = { write: (line: string) => out.write(`<${syslogPriority(line)}>${line}`) };
  }
  const log = destination ? pino(opts, destination) : pino(opts);
  const timer = setInterval(() => limiter.flush(log), LOG_WINDOW_MS);
  timer.unref();
  return log;
}

/**
 * journald's priority for a pino line, as the "<N>" prefix it strips from a service's stdout
 * (SyslogLevelPrefix=yes, the default): without it every line is PRIORITY 6 and
 * `journalctl -p warning` misses the alerts (measured: systemd 252 in user-mode Linux).
 */
export function syslogPriority(line: string): number {
  const m = /^\{"level":(\d+)/.exec(line);
  const level = m ? Number(m[1]) : 30;
  return level >= 60 ? 2 : level >= 50 ? 3 : level >= 40 ? 4 : level >= 30 ? 6 : 7;
}

/** systemd connected our stdout to the journal: JOURNAL_STREAM is its "device:inode". */
export function stdoutIsJournal(env: NodeJS.ProcessEnv = process.env, fd = 1): boolean {
  const m = /^(\d+):(\d+)$/.exec(env.JOURNAL_STREAM ?? '');
  if (!m) return false;
  try {
    const st = fs.fstatSync(fd);
    return String(st.dev) === m[1] && String(st.ino) === m[2];
  } catch {
    return false;
  }
}

/** A logger that drops everything, for tests and one-shot commands that print their own output. */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}
