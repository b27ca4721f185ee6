// The order load's door through the BFF processes, as a storefront behind a
// load balancer reaches them: each call goes to the next BFF running (read
// from the shop at each call, so a restarted one is used again), over
// GraphQL with the buyer's own token (one login each). A BFF that refuses
// the connection has not seen the request: the next one is tried. A GraphQL
// error with a service's code is a refusal (ServiceError); anything else is a
// call without an answer.
import { isErrorCode } from '../../subjects/index.ts';
import { ServiceError } from '../../services/kit/index.ts';
import type { OrderDoor } from '../chaos/load.ts';
import { BUYER_PASSWORD, type Buyer } from '../chaos/run.ts';
import type { Shop } from '../chaos/shop.ts';

interface GraphQLAnswer<T> {
  data?: T | null;
  errors?: { message: string; extensions?: { code?: string } }[];
}

export function bffOrderDoor(shop: Shop, buyers: readonly Buyer[]): OrderDoor {
  const emails = new Map(buyers.map((buyer) => [buyer.id, buyer.email]));
  const tokens = new Map<string, Promise<string>>();
  let next = 0;

  async function post<T>(query: string, variables: Record<string, unknown>, token?: string): Promise<T> {
    for (let tried = 0; ; tried++) {
      const bffs = shop.bffs;
      if (bffs.length === 0) throw new Error('no BFF running');
      const bff = bffs[next++ % bffs.length]!;
      let response: Response;
      try {
        response = await fetch(new URL('/graphql', bff.url), {
          method: 'POST',
          headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) },
          body: JSON.stringify({ query, variables }),
          signal: AbortSignal.timeout(15_000),
        });
      } catch (error) {
        const refused = (error as { cause?: { code?: string } }).cause?.code === 'ECONNREFUSED';
        if (refused && tried < bffs.length) continue;
        throw error;
      }
      const answer = (await response.json()) as GraphQLAnswer<T>;
      const failure = answer.errors?.[0];
      if (!failure) return answer.data as T;
      const code = failure.extensions?.code;
      if (isErrorCode(code)) throw new ServiceError(code, failure.message);
      throw new Error(`BFF answered ${response.status} ${code ?? ''}: ${failure.message}`);
    }
  }

  function tokenOf(customerId: string): Promise<string> {
    let token = tokens.get(customerId);
    if (!token) {
      token = post<{ login: { token: string } }>(
        'mutation ($email: String!, $password: String!) { login(email: $email, password: $password) { token } }',
        { email: emails.get(customerId), password: BUYER_PASSWORD },
      ).then((data) => data.login.token);
      // A failed login is tried again on the next call.
      token.catch(() => tokens.delete(customerId));
      tokens.set(customerId, token);
    }
    return token;
  }

  return {
    async place({ customerId, lines, paymentToken, idempotencyKey }) {
      const data = await post<{ placeOrder: { id: string } }>(
        'mutation ($lines: [OrderLineInput!]!, $paymentToken: String!, $key: String) { placeOrder(lines: $lines, paymentToken: $paymentToken, idempotencyKey: $key) { id } }',
        { lines, paymentToken, key: idempotencyKey },
        await tokenOf(customerId),
      );
      return data.placeOrder;
    },
    async cancel({ id, customerId, reason }) {
      if (!customerId) throw new Error('the load cancels as the order’s customer');
      return post(
        'mutation ($id: ID!, $reason: String) { cancelOrder(id: $id, reason: $reason) { id } }',
        { id, reason },
        await tokenOf(customerId),
      );
    },
  };
}
