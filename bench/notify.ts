// The notification path alone (`node bench/notify.ts`): the customer and
// notification services as child processes (scripts/lib/shop.ts startShop), their
// nats-server, PostgreSQL and the SMTP sink; orders.confirmed events published
// straight into JetStream at a fixed rate, as the order service's relay would,
// each becoming one email. Prints the CPU milliseconds per email of every
// process, from the first publish to the moment every email is recorded SENT.
// A fixed rate keeps the batches the same size from run to run, so two
// versions compare on the same work (the saga's rate follows the machine).
//
//   BENCH_NOTIFY_RATE (60 events/s), BENCH_NOTIFY_SECONDS (20), BENCH_CPU_PROF=<dir>.
import { randomUUID } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import pg from 'pg';
import { customers, orders } from '../subjects/index.ts';
import { RpcClient, connectNats, createLogger } from '../services/kit/index.ts';
import { publishEvent } from '../test/messaging.ts';
import { cpuUsed, describeMachine, machine, progress, round } from '../scripts/lib/measure.ts';
import { intEnv } from './common.ts';
import { startShop } from '../scripts/lib/shop.ts';

const rate = intEnv('BENCH_NOTIFY_RATE', 60);
const seconds = intEnv('BENCH_NOTIFY_SECONDS', 20);
const shop = await startShop({ services: ['customers', 'notifications'], cpuProfileDir: process.env.BENCH_CPU_PROF || undefined });
try {
  const nc = await connectNats('bench-notify', { NATS_URL: shop.natsUrl }, createLogger('bench-notify', 'silent'));
  const client = new RpcClient(nc, { timeoutMs: 30_000 });
  const recipients: string[] = [];
  for (let i = 0; i < 20; i++) {
    const customer = await client.call(customers.register, {
      email: `notify-${i}@bench.test`,
      name: `Notify ${i}`,
      password: 'bench-password',
    });
    recipients.push(customer.id);
  }
  const js = nc.jetstream();
  const db = new pg.Pool({ connectionString: shop.databaseUrl('notifications'), max: 1 });
  const sent = async () =>
    Number((await db.query<{ n: string }>(`SELECT count(*) AS n FROM notifications WHERE status = 'SENT'`)).rows[0]!.n);
  let published = 0;
  const publishFor = async (s: number) => {
    const start = performance.now();
    for (let k = 0; k < rate * s; k++) {
      const wait = start + (k * 1000) / rate - performance.now();
      if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
      void publishEvent(js, orders.confirmed, {
        orderId: randomUUID(),
        customerId: recipients[k % recipients.length]!,
        total: { amount: 1234, currency: 'EUR' },
      });
      published++;
    }
  };
  const allSent = async () => {
    while ((await sent()) < published) await new Promise((resolve) => setTimeout(resolve, 200));
  };
  progress(`notify: warm-up, then ${seconds}s at ${rate} events/s`);
  await publishFor(3);
  await allSent();
  const before = await shop.cpuSnapshot();
  const from = published;
  const started = performance.now();
  await publishFor(seconds);
  await allSent();
  const wall = (performance.now() - started) / 1000;
  const cpu = cpuUsed(before, await shop.cpuSnapshot());
  const emails = published - from;
  process.stdout.write(
    `machine: ${describeMachine(machine())}\n${emails} emails in ${round(wall, 1)} s; CPU ms per email: ${Object.entries(cpu)
      .map(([name, used]) => `${name} ${round((used * 1000) / emails, 3)}`)
      .join(', ')}\n`,
  );
  await db.end();
  await nc.close();
} finally {
  await shop.stop();
}
