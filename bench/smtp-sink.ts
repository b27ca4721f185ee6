// Bench-only child process: an SMTP server that accepts every email and keeps
// nothing, for the notification service to send to. Prints "listening <port>".
import type { AddressInfo } from 'node:net';
import { SMTPServer } from 'smtp-server';

const server = new SMTPServer({
  authOptional: true,
  disabledCommands: ['STARTTLS', 'AUTH'],
  logger: false,
  // The notification service sends one email at a time per connection; allow it many.
  maxClients: 1000,
  onData(stream, _session, callback) {
    stream.resume();
    stream.on('end', () => callback());
  },
});
server.listen(Number(process.env.SMTP_SINK_PORT ?? 0), '127.0.0.1', () => {
  process.stdout.write(`listening ${(server.server.address() as AddressInfo).port}\n`);
});
process.once('SIGTERM', () => server.close(() => process.exit(0)));
