// A shortcut around nats.js's KV API, kept only while an A/B shows it pays
// (SHOP_RAW_KV_SUBJECTS=1 turns it on; /work/notes/perf.md and
// docs/decisions.md "State puts: the KV API" have the figures). The default
// is kv.get / kv.put (outbox.ts: kvStateBucket).
//
// Turned on, the relay publishes a state straight to its `$KV.<bucket>.<key>`
// subject with js.publish, which takes what kv.put does not: the trace
// context in headers and a Nats-Msg-Id; and it reads a key's last message
// from the stream (STREAM.MSG.GET, the leader's answer).
import type { JetStreamClient, JetStreamManager, NatsError } from 'nats';
import type { Envelope } from '../../subjects/index.ts';
import type { StateBucket } from './outbox.ts';

export const rawKvSubjects = process.env.SHOP_RAW_KV_SUBJECTS === '1';

/** JetStream's error code: no message for the subject. */
const JS_NO_MESSAGE_FOUND = 10037;

const managers = new WeakMap<JetStreamClient, Promise<JetStreamManager>>();

export function rawStateBucket(js: JetStreamClient, bucket: string): StateBucket {
  const subject = (key: string) => `$KV.${bucket}.${key}`;
  return {
    async last(key) {
      let jsm = managers.get(js);
      if (!jsm) {
        jsm = js.jetstreamManager(false);
        managers.set(js, jsm);
      }
      try {
        const last = await (await jsm).streams.getMessage(`KV_${bucket}`, { last_by_subj: subject(key) });
        return { seq: last.seq, version: last.data.length > 0 ? ((last.json<Envelope>().data as { version?: number })?.version ?? 0) : 0 };
      } catch (error) {
        if ((error as NatsError).api_error?.err_code === JS_NO_MESSAGE_FOUND) return { seq: 0, version: 0 };
        throw error;
      }
    },
    async put(key, data, expectedSeq, { msgID, headers }) {
      const ack = await js.publish(subject(key), data, { msgID, headers, expect: { lastSubjectSequence: expectedSeq }, timeout: 5000 });
      return ack.seq;
    },
  };
}
