// `npm run dlq -- <command>`: the dead letters in the DLQ stream, as the
// consumers left them (the original payload and headers, plus Shop-Dlq-*
// headers saying which consumer gave up on it, why, and where it came from).
//
//   npm run dlq -- list [--consumer NAME] [--json]    every dead letter, oldest first
//   npm run dlq -- show <seq> [--json]                one in full: headers and payload
//   npm run dlq -- replay <seq>... [--force]          publish again to its original subject, then delete it
//   npm run dlq -- drop <seq>...                      delete it
//
// Replay republishes the original payload unchanged to Shop-Dlq-Subject with
// a fresh Nats-Msg-Id (the old one may still be inside the stream's duplicate
// window). The envelope keeps its id, so every consumer that already handled
// the event skips it through its inbox: only the one that failed acts on it.
// A crash between the publish and the delete leaves the letter in place; a
// second replay is then harmless for the same reason. A poison letter (one
// that broke its contract) would only come back: replay refuses it unless
// --force (e.g. after the contract was widened).
//
// Connects like the services do: NATS_URL, NATS_USER, NATS_PASSWORD (the
// `admin` user of nats.conf: dead letters belong to operators).
import { randomUUID } from 'node:crypto';
import {
  connect,
  headers as natsHeaders,
  type JetStreamClient,
  type JetStreamManager,
  type MsgHdrs,
  type NatsConnection,
  type PubAck,
} from 'nats';
import { streams } from '../subjects/index.ts';
import { DeadLetterHeaders } from '../services/kit/consumer.ts';
import { type ConfigError, loadConfig, ServiceSettings } from '../services/kit/config.ts';

const DLQ = streams.DLQ.name;
/** Header a replayed event carries: the DLQ sequence it came from, for whoever reads the stream later. */
export const REPLAYED_FROM_HEADER = 'Shop-Dlq-Replayed-From';

export interface DeadLetter {
  /** Sequence in the DLQ stream: what show, replay and drop take. */
  seq: number;
  /** When it was dead-lettered. */
  time: string;
  /** dlq.<stream>.<consumer> */
  subject: string;
  /** Where the event was published, and where replay sends it. */
  originalSubject: string | undefined;
  originalStream: string | undefined;
  originalSeq: number | undefined;
  consumer: string | undefined;
  deliveries: number | undefined;
  error: string | undefined;
  /** The envelope id, when the payload is an envelope. */
  eventId: string | undefined;
  headers: Record<string, string[]>;
  data: Uint8Array;
}

/** A mistake the operator can fix: printed without a stack. */
export class DlqError extends Error {
  override readonly name = 'DlqError';
  readonly exitCode: number;
  constructor(message: string, exitCode = 1) {
    super(message);
    this.exitCode = exitCode;
  }
}

function headerRecord(headers: MsgHdrs | undefined): Record<string, string[]> {
  const record: Record<string, string[]> = {};
  for (const [key, values] of headers ?? []) record[key] = [...values];
  return record;
}

function toDeadLetter(seq: number, time: Date, subject: string, headers: MsgHdrs | undefined, data: Uint8Array): DeadLetter {
  const get = (name: string) => headers?.get(name) || undefined;
  let eventId: string | undefined;
  try {
    const parsed = JSON.parse(Buffer.from(data).toString('utf8')) as { id?: unknown };
    if (typeof parsed?.id === 'string') eventId = parsed.id;
  } catch {
    // not JSON: a poison letter
  }
  const number = (value: string | undefined) => (value && /^\d+$/.test(value) ? Number(value) : undefined);
  return {
    seq,
    time: time.toISOString(),
    subject,
    originalSubject: get(DeadLetterHeaders.subject),
    originalStream: get(DeadLetterHeaders.stream),
    originalSeq: number(get(DeadLetterHeaders.sequence)),
    consumer: get(DeadLetterHeaders.consumer),
    deliveries: number(get(DeadLetterHeaders.deliveries)),
    error: get(DeadLetterHeaders.error),
    eventId,
    headers: headerRecord(headers),
    data,
  };
}

async function dlqExists(jsm: JetStreamManager): Promise<boolean> {
  try {
    await jsm.streams.info(DLQ);
    return true;
  } catch (error) {
    if ((error as Error).message === 'stream not found') return false;
    throw error;
  }
}

/** Every dead letter stored when the call starts, oldest first (optionally of one consumer). */
export async function listDeadLetters(
  js: JetStreamClient,
  jsm: JetStreamManager,
  options: { consumer?: string } = {},
): Promise<DeadLetter[]> {
  if (!(await dlqExists(jsm))) return [];
  // How many there are (per subject dlq.<stream>.<consumer>) bounds the read below.
  const { state } = await jsm.streams.info(DLQ, { subjects_filter: 'dlq.>' });
  const wanted = Object.entries(state.subjects ?? {})
    .filter(([subject]) => !options.consumer || subject.split('.')[2] === options.consumer)
    .reduce((sum, [, count]) => sum + count, 0);
  if (wanted === 0) return [];
  const found: DeadLetter[] = [];
  // An ordered consumer of our own reads the stream in batches, instead of one request per letter.
  const consumer = await js.consumers.get(DLQ, options.consumer ? { filterSubjects: `dlq.*.${options.consumer}` } : {});
  try {
    while (found.length < wanted) {
      const batch = await consumer.fetch({ max_messages: Math.min(256, wanted - found.length), expires: 2000 });
      let got = 0;
      for await (const msg of batch) {
        got++;
        if (msg.seq > state.last_seq) continue; // dead-lettered while we read: not part of this list
        const time = new Date(Math.floor(msg.info.timestampNanos / 1e6));
        found.push(toDeadLetter(msg.seq, time, msg.subject, msg.headers, msg.data));
      }
      if (got === 0) break; // some were deleted while we read
    }
  } finally {
    // Gone now rather than after the server's five minutes of inactivity.
    await consumer.delete().catch(() => {});
  }
  return found;
}

export async function getDeadLetter(jsm: JetStreamManager, seq: number): Promise<DeadLetter> {
  try {
    const stored = await jsm.streams.getMessage(DLQ, { seq });
    return toDeadLetter(stored.seq, stored.time, stored.subject, stored.header, stored.data);
  } catch (error) {
    const message = (error as Error).message;
    if (/no message found|stream not found/i.test(message)) throw new DlqError(`no dead letter ${seq}; npm run dlq -- list shows them`);
    throw error;
  }
}

export interface Replayed {
  seq: number;
  subject: string;
  eventId: string | undefined;
  /** Where the event landed again. */
  stream: string;
  streamSeq: number;
}

export async function replayDeadLetter(
  js: JetStreamClient,
  jsm: JetStreamManager,
  seq: number,
  options: { force?: boolean } = {},
): Promise<Replayed> {
  const letter = await getDeadLetter(jsm, seq);
  const subject = letter.originalSubject;
  if (!subject) throw new DlqError(`dead letter ${seq} has no ${DeadLetterHeaders.subject} header: nowhere to replay it`);
  if (letter.error?.startsWith('poison') && !options.force) {
    throw new DlqError(
      `dead letter ${seq} is poison (${letter.error}); replayed as it is, it would only come back. ` +
        'Use --force once what refused it has changed, or drop it.',
    );
  }
  // The original headers (trace context) go along; ours and the server's do not.
  const headers = natsHeaders();
  for (const [key, values] of Object.entries(letter.headers)) {
    if (key.startsWith('Shop-Dlq-') || key.startsWith('Nats-')) continue;
    for (const value of values) headers.append(key, value);
  }
  headers.set(REPLAYED_FROM_HEADER, String(seq));
  let ack: PubAck;
  try {
    ack = await js.publish(subject, letter.data, { msgID: `replay-${randomUUID()}`, headers, timeout: 5000 });
  } catch (error) {
    throw new DlqError(`dead letter ${seq} could not be published to ${subject} (${(error as Error).message}); it is kept`);
  }
  await jsm.streams.deleteMessage(DLQ, seq, false);
  return { seq, subject, eventId: letter.eventId, stream: ack.stream, streamSeq: ack.seq };
}

export async function dropDeadLetter(jsm: JetStreamManager, seq: number): Promise<DeadLetter> {
  const letter = await getDeadLetter(jsm, seq);
  await jsm.streams.deleteMessage(DLQ, seq, false);
  return letter;
}

// --- Command line ------------------------------------------------------------------------------

const USAGE = `usage: npm run dlq -- <command>
  list [--consumer NAME] [--json]   every dead letter, oldest first
  show <seq> [--json]               one dead letter: its headers and payload
  replay <seq>... [--force]         publish again to the original subject (fresh Nats-Msg-Id, same event id), then delete
  drop <seq>...                     delete
Connects to NATS_URL (default nats://127.0.0.1:4222) as NATS_USER / NATS_PASSWORD.`;

const SHOW_LIMIT = 64 * 1024;

function seqs(args: readonly string[], command: string): number[] {
  if (args.length === 0) throw new DlqError(`${command} needs the sequence of a dead letter; npm run dlq -- list shows them`, 2);
  return args.map((arg) => {
    if (!/^[1-9]\d*$/.test(arg)) throw new DlqError(`"${arg}" is not a sequence number`, 2);
    return Number(arg);
  });
}

function oneLine(text: string | undefined, width: number): string {
  const flat = (text ?? '').replace(/\s+/g, ' ');
  return flat.length > width ? `${flat.slice(0, width - 1)}…` : flat;
}

function printList(letters: readonly DeadLetter[]): string {
  if (letters.length === 0) return 'no dead letters';
  const rows = [['seq', 'dead since', 'consumer', 'subject', 'deliveries', 'error']];
  for (const l of letters) {
    rows.push([String(l.seq), l.time, l.consumer ?? '?', l.originalSubject ?? '?', String(l.deliveries ?? '?'), oneLine(l.error, 70)]);
  }
  const widths = rows[0]!.map((_, column) => Math.max(...rows.map((row) => row[column]!.length)));
  const lines = rows.map((row) =>
    row
      .map((cell, column) => cell.padEnd(widths[column]!))
      .join('  ')
      .trimEnd(),
  );
  lines.splice(1, 0, widths.map((width) => '-'.repeat(width)).join('  '));
  lines.push('', `${letters.length} dead letter(s)`);
  return lines.join('\n');
}

function printOne(letter: DeadLetter): string {
  const text = Buffer.from(letter.data).toString('utf8');
  let body: string;
  try {
    body = JSON.stringify(JSON.parse(text), null, 2);
  } catch {
    body = text;
  }
  const cut =
    body.length > SHOW_LIMIT ? `${body.slice(0, SHOW_LIMIT)}\n… (${body.length - SHOW_LIMIT} more characters; --json for all)` : body;
  return [
    `seq:         ${letter.seq}`,
    `dead since:  ${letter.time}`,
    `consumer:    ${letter.consumer ?? '?'}`,
    `from:        ${letter.originalSubject ?? '?'} (stream ${letter.originalStream ?? '?'}, seq ${letter.originalSeq ?? '?'})`,
    `deliveries:  ${letter.deliveries ?? '?'}`,
    `error:       ${letter.error ?? '?'}`,
    `event id:    ${letter.eventId ?? '(payload is not an envelope)'}`,
    'headers:',
    ...Object.entries(letter.headers).flatMap(([key, values]) => values.map((value) => `  ${key}: ${value}`)),
    `payload (${letter.data.length} bytes):`,
    cut,
  ].join('\n');
}

function asJson(letter: DeadLetter): Record<string, unknown> {
  const { data, ...rest } = letter;
  return { ...rest, payload: Buffer.from(data).toString('utf8') };
}

async function connectFromEnv(): Promise<NatsConnection> {
  let env: { NATS_URL: string; NATS_USER?: string | undefined; NATS_PASSWORD?: string | undefined };
  try {
    env = loadConfig({
      NATS_URL: ServiceSettings.NATS_URL,
      NATS_USER: ServiceSettings.NATS_USER,
      NATS_PASSWORD: ServiceSettings.NATS_PASSWORD,
    });
  } catch (error) {
    throw new DlqError((error as ConfigError).message, 2);
  }
  try {
    return await connect({
      servers: env.NATS_URL.split(',').map((url) => url.trim()),
      name: 'dlq-cli',
      ...(env.NATS_USER ? { user: env.NATS_USER, pass: env.NATS_PASSWORD ?? '' } : {}),
      timeout: 5000,
      noAsyncTraces: true,
    });
  } catch (error) {
    throw new DlqError(`cannot reach NATS at ${env.NATS_URL} (${(error as Error).message}); set NATS_URL`);
  }
}

export async function main(
  argv: readonly string[],
  out: (text: string) => void = (text) => process.stdout.write(`${text}\n`),
): Promise<void> {
  const flags = new Set<string>(argv.filter((arg) => arg === '--json' || arg === '--force'));
  const rest = argv.filter((arg) => !flags.has(arg));
  const consumerAt = rest.indexOf('--consumer');
  let consumer: string | undefined;
  if (consumerAt >= 0) {
    consumer = rest[consumerAt + 1];
    if (!consumer) throw new DlqError('--consumer needs a name, e.g. payments-charge-reserved', 2);
    rest.splice(consumerAt, 2);
  }
  const [command, ...args] = rest;
  if (!command || command === 'help' || command === '--help' || command === '-h') {
    out(USAGE);
    if (!command) throw new DlqError('', 2);
    return;
  }
  if (!['list', 'show', 'replay', 'drop'].includes(command)) throw new DlqError(`unknown command "${command}"\n${USAGE}`, 2);
  const numbers = command === 'list' ? [] : seqs(args, command);
  if (command === 'show' && numbers.length > 1) throw new DlqError('show takes one sequence', 2);

  const nc = await connectFromEnv();
  try {
    const jsm = await nc.jetstreamManager();
    const js = nc.jetstream();
    switch (command) {
      case 'list': {
        const letters = await listDeadLetters(js, jsm, consumer ? { consumer } : {});
        out(flags.has('--json') ? JSON.stringify(letters.map(asJson), null, 2) : printList(letters));
        return;
      }
      case 'show': {
        const letter = await getDeadLetter(jsm, numbers[0]!);
        out(flags.has('--json') ? JSON.stringify(asJson(letter), null, 2) : printOne(letter));
        return;
      }
      case 'replay': {
        const failures: string[] = [];
        for (const seq of numbers) {
          try {
            const done = await replayDeadLetter(js, jsm, seq, { force: flags.has('--force') });
            out(
              `replayed ${seq}: event ${done.eventId ?? '?'} to ${done.subject} (${done.stream} seq ${done.streamSeq}); dead letter deleted`,
            );
          } catch (error) {
            if (!(error instanceof DlqError)) throw error;
            failures.push(error.message);
          }
        }
        if (failures.length > 0) throw new DlqError(failures.join('\n'));
        return;
      }
      case 'drop': {
        const failures: string[] = [];
        for (const seq of numbers) {
          try {
            const letter = await dropDeadLetter(jsm, seq);
            out(`dropped ${seq} (${letter.originalSubject ?? '?'} for ${letter.consumer ?? '?'})`);
          } catch (error) {
            if (!(error instanceof DlqError)) throw error;
            failures.push(error.message);
          }
        }
        if (failures.length > 0) throw new DlqError(failures.join('\n'));
        return;
      }
    }
  } finally {
    await nc.close();
  }
}

if (import.meta.main) {
  try {
    await main(process.argv.slice(2));
  } catch (error) {
    if (error instanceof DlqError) {
      if (error.message) process.stderr.write(`${error.message}\n`);
      process.exitCode = error.exitCode;
    } else {
      process.stderr.write(`dlq: ${(error as Error).stack ?? String(error)}\n`);
      process.exitCode = 1;
    }
  }
}
