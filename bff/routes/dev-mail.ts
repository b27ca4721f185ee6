// The emails `npm start` caught when no SMTP server answered
// (scripts/mail-catcher.ts writes each as a JSON file into DEV_MAIL_DIR):
// /dev/mail as a page, newest first, /dev/mail.json as data. Registered only
// with DEV_MAIL_DIR set, which npm start alone sets: never in compose or
// production, where the emails go to a real SMTP server.
import { readFile, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';

/** The newest this many are shown. */
const SHOWN = 100;

interface CaughtMail {
  receivedAt: string;
  from: string;
  to: string;
  subject: string;
  text: string;
}

async function newestMails(folder: string): Promise<CaughtMail[]> {
  const names = (await readdir(folder).catch(() => [] as string[]))
    .filter((name) => name.endsWith('.json'))
    .sort()
    .reverse()
    .slice(0, SHOWN);
  return Promise.all(names.map(async (name) => JSON.parse(await readFile(join(folder, name), 'utf8')) as CaughtMail));
}

const escapeHtml = (text: string) => text.replace(/[&<>"']/g, (character) => `&#${character.charCodeAt(0)};`);

function page(mails: readonly CaughtMail[]): string {
  const items = mails.map(
    (mail) => `<article>
<h2>${escapeHtml(mail.subject)}</h2>
<p><b>To</b> ${escapeHtml(mail.to)} · <b>From</b> ${escapeHtml(mail.from)} · ${escapeHtml(mail.receivedAt)}</p>
<pre>${escapeHtml(mail.text)}</pre>
</article>`,
  );
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Emails caught by npm start</title></head>
<body>
<h1>Emails caught by npm start (${mails.length})</h1>
${items.join('\n<hr>\n') || '<p>None yet: place an order.</p>'}
</body></html>`;
}

export default async function devMailRoutes(app: FastifyInstance, options: { folder: string }): Promise<void> {
  app.get('/dev/mail.json', async () => newestMails(options.folder));
  app.get('/dev/mail', async (_request, reply) =>
    reply
      .type('text/html; charset=utf-8')
      .header('content-security-policy', "default-src 'none'")
      .header('cache-control', 'no-store')
      .send(page(await newestMails(options.folder))),
  );
}
