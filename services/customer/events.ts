// Event consumers of the customer service. It reacts to no other domain's
// events yet; it emits `customers.events.registered` from its handlers.
import type { EventHandler } from '../kit/index.ts';

export function customerConsumers(): EventHandler[] {
  return [];
}
