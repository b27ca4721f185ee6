// A three-node NATS cluster on loopback, for the cluster suite
// (test/cluster/), the chaos run, and the tests of one service through
// elections (startServiceOnCluster: test/cluster-*.test.ts): each node is
// nats-server with the project's nats.conf (startNats) plus the cluster
// settings compose.yaml gives its nodes (clusterArgs; test/compose.test.ts
// checks that compose.yaml's are these). Every node keeps its ports and store
// across restarts, so the clients' list of URLs stays right. Faults: kill -9,
// SIGSTOP/SIGCONT, and the operator's restart in lame duck mode (SIGUSR2).
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect, type NatsConnection } from 'nats';
import type { RunningService, ServiceDefinition } from '../services/kit/index.ts';
import { dropTestDatabases, freePort, startNats, startTestService, waitFor, type TestNats } from './harness.ts';

/** The cluster's name, as compose.yaml names it. */
export const CLUSTER_NAME = 'shop';

export interface ClusterNodeSettings {
  /** The server's name (nats-1, ...): how leaders are reported. */
  name: string;
  /** Where it listens for routes, e.g. nats://0.0.0.0:6222. */
  listen: string;
  /** Every node's route URL, its own included (a server skips the route to itself). */
  routes: readonly string[];
}

/** The cluster part of a node's command line, for compose.yaml's nodes and the suite's alike. */
export function clusterArgs(node: ClusterNodeSettings): string[] {
  return ['--server_name', node.name, '--cluster_name', CLUSTER_NAME, '--cluster', node.listen, '--routes', node.routes.join(',')];
}

interface Node {
  name: string;
  port: number;
  clusterPort: number;
  httpPort: number;
  storeDir: string;
  server: TestNats | undefined;
}

/** What /jsz tells of the streams a server holds. */
interface Jsz {
  meta_cluster?: { leader?: string };
  account_details?: { stream_detail?: { name: string; cluster?: { leader?: string } }[] }[];
}

function isRunning(node: Node): boolean {
  return node.server !== undefined && node.server.process.exitCode === null && node.server.process.signalCode === null;
}

export class NatsCluster {
  readonly #nodes: Node[];
  readonly #users: boolean;
  readonly #logDir: string | undefined;

  private constructor(nodes: Node[], users: boolean, logDir: string | undefined) {
    this.#nodes = nodes;
    this.#users = users;
    this.#logDir = logDir;
  }

  /** Starts `size` nodes on free loopback ports and waits until every one is healthy (JetStream current). */
  static async start(options: { size?: number; users?: boolean; logDir?: string | undefined } = {}): Promise<NatsCluster> {
    const nodes: Node[] = [];
    for (let i = 1; i <= (options.size ?? 3); i++) {
      nodes.push({
        name: `nats-${i}`,
        port: await freePort(),
        clusterPort: await freePort(),
        httpPort: await freePort(),
        storeDir: await mkdtemp(join(tmpdir(), `shop-cluster-${i}-`)),
        server: undefined,
      });
    }
    const cluster = new NatsCluster(nodes, options.users ?? false, options.logDir);
    try {
      await Promise.all(nodes.map((node) => cluster.#launch(node)));
      await Promise.all(nodes.map((node) => cluster.waitHealthy(node.name)));
      return cluster;
    } catch (error) {
      await cluster.cleanup();
      throw error;
    }
  }

  /** Every node's client URL, comma-separated: NATS_URL for a process that rides through one node's death. */
  get url(): string {
    return this.names.map((name) => this.urlOf(name)).join(',');
  }

  get names(): string[] {
    return this.#nodes.map((node) => node.name);
  }

  /** The node a client is connected to, from nats.js's getServer() ("127.0.0.1:<port>"). */
  nodeAt(server: string): string | undefined {
    return this.#nodes.find((node) => server.endsWith(`:${node.port}`))?.name;
  }

  /** A node's client URL. */
  urlOf(name: string): string {
    return `nats://127.0.0.1:${this.#node(name).port}`;
  }

  /** Nodes whose process is running (a paused one counts). */
  running(): string[] {
    return this.#nodes.filter(isRunning).map((node) => node.name);
  }

  #node(name: string): Node {
    const node = this.#nodes.find((candidate) => candidate.name === name);
    if (!node) throw new Error(`no node named ${name} (nodes: ${this.names.join(', ')})`);
    return node;
  }

  async #launch(node: Node): Promise<void> {
    node.server = await startNats({
      port: node.port,
      storeDir: node.storeDir,
      users: this.#users,
      args: [
        ...clusterArgs({
          name: node.name,
          listen: `nats://127.0.0.1:${node.clusterPort}`,
          routes: this.#nodes.map((other) => `nats://127.0.0.1:${other.clusterPort}`),
        }),
        '--http_port',
        String(node.httpPort),
        // A restarted node appends to its file; -D: the leader changes and client moves are debug lines.
        ...(this.#logDir ? ['--log', join(this.#logDir, `${node.name}.log`), '-D'] : []),
      ],
    });
  }

  async #monitor<T>(node: Node, path: string): Promise<{ status: number; body: T }> {
    const response = await fetch(`http://127.0.0.1:${node.httpPort}${path}`, { signal: AbortSignal.timeout(2000) });
    return { status: response.status, body: (await response.json()) as T };
  }

  /** Waits until `name` answers /healthz with 200: JetStream on, the meta leader known, its streams and consumers current. */
  async waitHealthy(name: string, timeoutMs = 60_000): Promise<void> {
    const node = this.#node(name);
    await waitFor(async () => (await this.#monitor(node, '/healthz')).status === 200, {
      timeoutMs,
      intervalMs: 100,
      what: `${name} to be healthy (GET /healthz)`,
    });
  }

  /** /jsz of the first live node that answers. */
  async #jsz(query: string): Promise<Jsz> {
    for (const node of this.#nodes) {
      if (!isRunning(node)) continue;
      try {
        return (await this.#monitor<Jsz>(node, `/jsz?${query}`)).body;
      } catch {
        // paused or dying: ask the next
      }
    }
    throw new Error('no node answers /jsz');
  }

  /** The JetStream meta leader's name, once there is one. */
  async metaLeader(timeoutMs = 30_000): Promise<string> {
    return waitFor(async () => (await this.#jsz('leader-only=false')).meta_cluster?.leader || undefined, {
      timeoutMs,
      intervalMs: 100,
      what: 'a JetStream meta leader',
    });
  }

  /** The name of the node leading `stream`, once there is one. */
  async streamLeader(stream: string, timeoutMs = 30_000): Promise<string> {
    return waitFor(
      async () => {
        const jsz = await this.#jsz('accounts=true&streams=true');
        for (const account of jsz.account_details ?? []) {
          const found = account.stream_detail?.find((detail) => detail.name === stream);
          if (found?.cluster?.leader) return found.cluster.leader;
        }
        return undefined;
      },
      { timeoutMs, intervalMs: 100, what: `a leader of stream ${stream}` },
    );
  }

  /** Sends `signal` to a node and waits for it to exit (SIGKILL: a crash; SIGUSR2: lame duck mode, then exit). */
  async stop(name: string, signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
    const node = this.#node(name);
    const server = node.server;
    if (!server || !isRunning(node)) return;
    const exited = new Promise<void>((resolve) => server.process.once('exit', () => resolve()));
    server.process.kill(signal);
    await exited;
  }

  /** Starts a stopped node again on its ports and store, and waits until it is current. */
  async restart(name: string): Promise<void> {
    const node = this.#node(name);
    await this.#launch(node);
    await this.waitHealthy(name, 120_000);
  }

  /** SIGSTOP: the node holds its connections and answers nothing, as a stalled machine does. */
  pause(name: string): void {
    this.#node(name).server?.process.kill('SIGSTOP');
  }

  resume(name: string): void {
    this.#node(name).server?.process.kill('SIGCONT');
  }

  async cleanup(): Promise<void> {
    for (const node of this.#nodes) {
      node.server?.process.kill('SIGCONT');
      await node.server?.stop();
      await rm(node.storeDir, { recursive: true, force: true });
    }
  }
}

/** A service of a test's own on a cluster of its own, and the test's connection to every node. */
export interface ServiceOnCluster {
  cluster: NatsCluster;
  service: RunningService;
  nc: NatsConnection;
  /** Stops the service, the connection and the cluster; drops the test databases. */
  close(): Promise<void>;
}

/**
 * Starts a fresh three-node cluster and `definition` on it (no migrations of
 * its own), its streams with three replicas; the test's connection knows every
 * node and reconnects for as long as it takes.
 */
export async function startServiceOnCluster(definition: Omit<ServiceDefinition, 'migrations'>): Promise<ServiceOnCluster> {
  const migrations = await mkdtemp(join(tmpdir(), `shop-cluster-${definition.name}-`));
  const cluster = await NatsCluster.start();
  const service = await startTestService({ ...definition, migrations }, { url: cluster.url }, { env: { STREAM_REPLICAS: '3' } });
  const nc = await connect({ servers: cluster.url.split(','), noAsyncTraces: true, maxReconnectAttempts: -1, reconnectTimeWait: 200 });
  return {
    cluster,
    service,
    nc,
    async close() {
      await service.stop();
      await nc.close();
      await cluster.cleanup();
      await dropTestDatabases();
      await rm(migrations, { recursive: true, force: true });
    },
  };
}
