// Jobs that leak secrets the way real services do, written and failed by the real library:
// credentials in URLs, tokens in query strings, Authorization headers, AWS key ids and JWTs
// in the error a processor throws (so in failedReason, the stack trace and the events
// stream), in job.log lines, and in data fields with ordinary and custom names.
// usage: node secrets.js <lib> <redis-url> <prefix> <queue> <count>
//   lib: bull | bullmq5 (package aliases in package.json)
// Prints JSON: {"secrets": [...every secret string used...], "markers": [...plain data values...]}
const [lib, url, prefix, name, countArg] = process.argv.slice(2);
const count = Number(countArg || 5);
const mod = require(lib);
const isMQ = lib.startsWith('bullmq');
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

const S = {
  urlPass: 'urlpass-Q7x9',
  queryToken: 'qtok-8Hn2Lm',
  bearer: 'bearer-Zk3Pq9Wm',
  aws: 'AKIAIOSFODNN7EXAMPLE',
  jwt: 'eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1c2VyLTQyIn0.c2lnbmF0dXJlLWhlcmU',
  password: 'pw-Hunter2x',
  ssn: '123-45-6789',
  logToken: 'logtok-5Tg7Yu',
};
const markers = ['marker-alpha-1', 'marker-beta-2'];

async function main() {
  let q;
  let worker;
  const processor = async (job) => {
    await job.log(`calling upstream with Authorization: Bearer ${S.logToken}`);
    throw new Error(`upstream https://svc:${S.urlPass}@api.example.com/v1/charge?access_token=${S.queryToken} ` +
                    `refused (Authorization: Bearer ${S.bearer}, key ${S.aws}, session ${S.jwt})`);
  };
  if (isMQ) {
    const IORedis = require(require.resolve('ioredis', { paths: [require.resolve(lib)] }));
    const conn = () => new IORedis(url, { maxRetriesPerRequest: null });
    q = new mod.Queue(name, { connection: conn(), prefix });
    worker = new mod.Worker(name, processor, { connection: conn(), prefix });
  } else {
    q = new mod(name, url, { prefix });
    q.process('*', processor);
  }
  for (let i = 0; i < count; i++) {
    await q.add('charge', {
      user: `user-${i}`, note: markers[i % markers.length], password: S.password, ssn: S.ssn,
      callback: `https://hooks.example.com/cb?token=${S.queryToken}`,
    }, { attempts: 1 });
  }
  for (let i = 0; i < 400; i++) {
    const c = await q.getJobCounts();
    if ((c.failed || 0) >= count) break;
    await sleep(25);
  }
  if (worker) await worker.close();
  await q.close();
  process.stdout.write(JSON.stringify({ secrets: Object.values(S), markers }));
  process.exit(0);
}
main().catch((e) => { console.error(e); process.exit(1); });
