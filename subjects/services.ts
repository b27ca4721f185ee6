// The registry of the shop's processes: the one place that names each one,
// says where its code lives, which streams it owns, which NATS user of
// nats.conf it signs in as, and its operations port under `npm start`.
// Every launcher (npm start, bench, chaos), the test harness, the BFF's
// readiness, the live settings, the AsyncAPI generator and the nats.conf test
// read it; a new service is one entry here (and its folder).
//
// A service's name is also its NATS micro service name and the domain of its
// subjects (`customers.get`); its folder is singular (`services/customer`).
// This file is the one place that maps one to the other.
//
// The requests a service makes are declared by its ServiceDefinition
// (`calls`, beside `emits`); the BFF is not a ServiceDefinition, so its
// requests are declared here, in its entry.
import type { RpcContract } from './contract.ts';
import { customers } from './customers.ts';
import { notifications } from './notifications.ts';
import { orders } from './orders.ts';
import { payments } from './payments.ts';
import { products } from './products.ts';
import { shipments } from './shipments.ts';

export interface ProcessEntry {
  /** Micro service name, subject domain, log and metrics `service` label. */
  readonly name: string;
  /** Folder of its code, relative to the project root; `main.ts` inside starts it. */
  readonly folder: string;
  /** Streams whose events it writes (through its outbox). */
  readonly streams: readonly string[];
  /** Its user in nats.conf (password from NATS_<USER>_PASSWORD). */
  readonly natsUser: string;
  /** Its operations port (/metrics, /health/*) under `npm start`; each process its own. */
  readonly opsPort: number;
  /** True for a service of services/ (a micro service with its own database); false for the BFF. */
  readonly isService: boolean;
  /**
   * Requests it makes, for a process that is not a ServiceDefinition (the
   * BFF); a service declares them in its app.ts (`calls`).
   */
  readonly calls?: readonly RpcContract[];
  /** Options for Node before its entry script, wherever it runs (npm start, compose, Kubernetes). */
  readonly nodeArgs?: readonly string[];
}

function service<const N extends string, const F extends string>(name: N, folder: F, streams: readonly string[], opsPort: number) {
  return { name, folder: `services/${folder}` as const, streams, natsUser: name, opsPort, isService: true } satisfies ProcessEntry;
}

export const registry = {
  customers: service('customers', 'customer', ['CUSTOMERS'], 9465),
  products: service('products', 'product', ['INVENTORY', 'PRODUCTS'], 9466),
  orders: service('orders', 'order', ['ORDERS'], 9467),
  payments: service('payments', 'payment', ['PAYMENTS'], 9468),
  notifications: service('notifications', 'notification', [], 9469),
  shipments: service('shipments', 'shipping', ['SHIPMENTS'], 9470),
  bff: {
    name: 'bff',
    folder: 'bff',
    streams: [],
    natsUser: 'bff',
    opsPort: 9464,
    isService: false,
    // A young generation of 4 MB a semi-space rather than up to 64 MB: V8 grew it for the replicas'
    // catch-up and kept it resident; 1 MB cost a composed query ~50 % more CPU (docs/bff.md).
    nodeArgs: ['--max-semi-space-size=4'],
    calls: [
      customers.get,
      customers.getMany,
      customers.register,
      customers.authenticate,
      customers.rename,
      customers.listAddresses,
      customers.addAddress,
      customers.updateAddress,
      customers.setDefaultAddress,
      customers.removeAddress,
      products.get,
      products.getMany,
      products.list,
      products.create,
      products.restock,
      products.update,
      products.archive,
      orders.place,
      orders.get,
      orders.listByCustomer,
      orders.cancel,
      payments.getByOrders,
      notifications.listByOrders,
      shipments.getByOrders,
    ],
  },
} as const satisfies Record<string, ProcessEntry>;

export type ProcessName = keyof typeof registry;
export type ServiceName = Exclude<ProcessName, 'bff'>;

/** A service's folder under services/ (`customer`), as tools that address services by folder name them. */
export type ServiceFolder = { [K in ServiceName]: (typeof registry)[K]['folder'] extends `services/${infer F}` ? F : never }[ServiceName];

/** Every process of the shop, services first, in start order. */
export const PROCESSES = Object.keys(registry) as ProcessName[];
/** The services (every process but the BFF). */
export const SERVICES = PROCESSES.filter((name): name is ServiceName => registry[name].isService);

/** The entry script of a process, relative to the project root. */
export function entryScript(entry: ProcessEntry): string {
  return `${entry.folder}/main.ts`;
}

/** The command that starts it in a container: `node`, its Node options, its entry script. */
export function nodeCommand(entry: ProcessEntry): string[] {
  return ['node', ...(entry.nodeArgs ?? []), entryScript(entry)];
}

/** The last part of its folder (`customer` for services/customer), as tools name it. */
export function folderName(entry: ProcessEntry): string {
  return entry.folder.split('/').pop()!;
}

/**
 * The variable naming one service's own database where one environment
 * serves several processes (npm start, npm run reconcile): `<FOLDER>_DATABASE_URL`,
 * e.g. ORDER_DATABASE_URL.
 */
export function databaseVariable(entry: ProcessEntry): string {
  return `${folderName(entry).toUpperCase()}_DATABASE_URL`;
}

/**
 * The variable that moves one process's operations port off the registry's
 * under `npm start`: `<FOLDER>_OPS_PORT`, e.g. ORDER_OPS_PORT, BFF_OPS_PORT.
 */
export function opsPortVariable(entry: ProcessEntry): string {
  return `${folderName(entry).toUpperCase()}_OPS_PORT`;
}

/** The registry entry whose folder is `folder` (`services/customer` or `customer`), if any. */
export function processByFolder(folder: string): ProcessEntry | undefined {
  const wanted = folder.replace(/\/+$/, '');
  return Object.values(registry).find((entry) => entry.folder === wanted || entry.folder === `services/${wanted}`);
}
