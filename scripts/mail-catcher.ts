// The emails of `npm start` when no SMTP server answers (scripts/start.ts):
// an SMTP server in the start script's own process (smtp-server) takes every
// email, writes it as one JSON file into a folder (DATA_DIR/mail), and says
// so in one line; the BFF shows that folder at /dev/mail (DEV_MAIL_DIR,
// bff/routes/dev-mail.ts). parseMail reads just enough MIME for the
// single-part text emails the notification service sends; the tests' SMTP
// server (services/notification/test/smtp.ts) reads them with it too.
import { randomBytes } from 'node:crypto';
import { mkdir, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { SMTPServer } from 'smtp-server';

export interface ParsedMail {
  headers: Map<string, string>;
  from: string;
  to: string;
  subject: string;
  messageId: string;
  /** The decoded text body. */
  text: string;
}

/** One caught email as its file holds it (and as /dev/mail.json lists it). */
export interface CaughtMail {
  receivedAt: string;
  from: string;
  to: string;
  subject: string;
  messageId: string;
  text: string;
}

export interface MailCatcher {
  close(): Promise<void>;
}

/** Listens for SMTP at `host`:`port`; every email becomes a JSON file in `folder`, then `onMail` hears of it. */
export async function startMailCatcher(options: {
  host: string;
  port: number;
  folder: string;
  onMail: (mail: CaughtMail) => void;
  onError: (error: Error) => void;
}): Promise<MailCatcher> {
  await mkdir(options.folder, { recursive: true });
  const server = new SMTPServer({
    authOptional: true,
    disabledCommands: ['STARTTLS', 'AUTH'],
    logger: false,
    onData(stream, _session, callback) {
      const chunks: Buffer[] = [];
      stream.on('data', (chunk: Buffer) => chunks.push(chunk));
      stream.on('end', () => {
        const { headers: _headers, ...parsed } = parseMail(Buffer.concat(chunks).toString('utf8'));
        const mail: CaughtMail = { receivedAt: new Date().toISOString(), ...parsed };
        // Written whole, then renamed: the BFF never reads half a file. Names sort by arrival.
        const name = `${mail.receivedAt.replace(/[:.]/g, '-')}-${randomBytes(3).toString('hex')}.json`;
        const partial = join(options.folder, `.${name}.partial`);
        writeFile(partial, JSON.stringify(mail, null, 2))
          .then(() => rename(partial, join(options.folder, name)))
          .then(
            () => {
              options.onMail(mail);
              callback();
            },
            (error: Error) => callback(error),
          );
      });
    },
  });
  server.on('error', options.onError);
  await new Promise<void>((resolve, reject) => {
    server.server.once('error', reject);
    server.listen(options.port, options.host, () => resolve());
  });
  return { close: () => new Promise<void>((resolve) => server.close(() => resolve())) };
}

export function parseMail(raw: string): ParsedMail {
  const split = raw.indexOf('\r\n\r\n');
  const head = raw.slice(0, split).replace(/\r\n[ \t]+/g, ' '); // unfold
  const headers = new Map<string, string>();
  for (const line of head.split('\r\n')) {
    const colon = line.indexOf(':');
    if (colon > 0) headers.set(line.slice(0, colon).trim().toLowerCase(), line.slice(colon + 1).trim());
  }
  const encoding = (headers.get('content-transfer-encoding') ?? '7bit').toLowerCase();
  const body = raw.slice(split + 4);
  const text =
    encoding === 'quoted-printable'
      ? decodeQuotedPrintable(body)
      : encoding === 'base64'
        ? Buffer.from(body, 'base64').toString('utf8')
        : body;
  return {
    headers,
    from: decodeWords(headers.get('from') ?? ''),
    to: decodeWords(headers.get('to') ?? ''),
    subject: decodeWords(headers.get('subject') ?? ''),
    messageId: headers.get('message-id') ?? '',
    text: text.replace(/\r\n/g, '\n'),
  };
}

function decodeQuotedPrintable(body: string): string {
  const parts = body.replace(/=\r?\n/g, '').split(/(=[0-9A-F]{2})/i);
  const bytes = parts.map((part) =>
    /^=[0-9A-F]{2}$/i.test(part) ? Buffer.from([Number.parseInt(part.slice(1), 16)]) : Buffer.from(part, 'utf8'),
  );
  return Buffer.concat(bytes).toString('utf8');
}

/** RFC 2047 encoded words (=?UTF-8?Q?...?= and =?UTF-8?B?...?=). */
function decodeWords(value: string): string {
  return value
    .replace(/\?=\s+=\?/g, '?==?')
    .replace(/=\?([^?]+)\?([QB])\?([^?]*)\?=/gi, (_, _charset: string, kind: string, data: string) =>
      kind.toUpperCase() === 'B' ? Buffer.from(data, 'base64').toString('utf8') : decodeQuotedPrintable(data.replace(/_/g, ' ')),
    );
}
