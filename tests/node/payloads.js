// The playbook's PDF-conversion pipeline, with payloads at the sizes users have, written and
// processed by the real library: job data carrying a base64 document (50 KB to 2 MB) beside
// ordinary fields and secrets, workers returning a 50 KB base64 thumbnail (BullMQ copies each
// return value into its events stream: with removeOnComplete the stream is where they pile
// up), some jobs failing with credentials in the error, and job logs.
// usage: node payloads.js <lib> <redis-url> <prefix> <queue> <documents> <thumbnails>
//   lib: bull | bullmq5 | bullmq6 (package aliases in package.json)
// Prints JSON: {"secrets": [...], "markers": [...], "documents": n, "thumbnails": n}
const crypto = require('crypto');

const [lib, url, prefix, name, docsArg, thumbsArg] = process.argv.slice(2);
const documents = Number(docsArg || 8);
const thumbnails = Number(thumbsArg || 20);
const mod = require(lib);
const isMQ = lib.startsWith('bullmq');
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const SIZES = [50 * 1024, 200 * 1024, 1024 * 1024, 2 * 1024 * 1024];   // base64 characters

const S = {
  apiKey: 'ak-Doc7Rq2Zp9',          // a JSON field beside the blob
  urlPass: 'cbpass-W3e8Tn',         // a callback URL's password, inside a JSON string
  token: 'tok-Up4Ld9Xc',            // ?token= in the error a failing upload throws
  logToken: 'logtok-Hb6Vn2',        // Authorization: Bearer in a job log line
};
const markers = ['invoice-2026-001', 'contract-signed'];
const b64 = (chars) => crypto.randomBytes(Math.ceil(chars * 3 / 4)).toString('base64').slice(0, chars);

async function main() {
  let q;
  let worker;
  const processor = async (job) => {
    await job.log(`fetching the source with Authorization: Bearer ${S.logToken}`);
    if (job.data.fail) {
      throw new Error(`upload to https://files.example.com/put?token=${S.token} failed: 413 (${job.data.pdf.length} chars)`);
    }
    return { thumb: b64(50 * 1024), pages: 3, doc: job.data.meta ? job.data.meta.note : null };
  };
  const done = { completed: 0, failed: 0 };
  if (isMQ) {
    const IORedis = require(require.resolve('ioredis', { paths: [require.resolve(lib)] }));
    const conn = () => new IORedis(url, { maxRetriesPerRequest: null });
    q = new mod.Queue(name, { connection: conn(), prefix });
    worker = new mod.Worker(name, processor, { connection: conn(), prefix, concurrency: 8 });
    worker.on('completed', () => { done.completed += 1; });
    worker.on('failed', () => { done.failed += 1; });
  } else {
    q = new mod(name, url, { prefix });
    q.process('*', 8, processor);
    q.on('completed', () => { done.completed += 1; });
    q.on('failed', () => { done.failed += 1; });
  }
  // Documents: kept after completion (their data is the point), one in four fails.
  for (let i = 0; i < documents; i++) {
    await q.add('convert', {
      pdf: b64(SIZES[i % SIZES.length]),
      meta: { note: markers[i % markers.length], apiKey: S.apiKey, callback: `https://svc:${S.urlPass}@hooks.example.com/done` },
      fail: i % 4 === 3,
    }, { attempts: 1, removeOnComplete: false });
  }
  // Thumbnails: removed on completion, so their return values live on in the events stream only.
  const bulk = [];
  for (let i = 0; i < thumbnails; i++) {
    bulk.push({ name: 'thumbnail', data: { page: i, source: `s3://docs/${i}.pdf` },
                opts: { attempts: 1, removeOnComplete: isMQ } });
  }
  for (let i = 0; i < bulk.length; i += 200) await q.addBulk(bulk.slice(i, i + 200));
  const total = documents + thumbnails;
  for (let i = 0; i < 6000 && done.completed + done.failed < total; i++) await sleep(20);
  if (done.completed + done.failed < total) throw new Error(`only ${done.completed + done.failed} of ${total} jobs finished`);
  if (worker) await worker.close();
  await q.close();
  process.stdout.write(JSON.stringify({ secrets: Object.values(S), markers, documents, thumbnails }));
  process.exit(0);
}
main().catch((e) => { console.error(e); process.exit(1); });
