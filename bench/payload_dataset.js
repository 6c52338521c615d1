// The bench's realistic-payload dataset: the playbook's document pipeline at the sizes users
// have, written and moved by the real BullMQ 5 (no hand-written keys). Four queues:
//   documents   DOCS jobs whose data carries a base64 document of 50 KB to 1 MB (PDF-like) beside
//               metadata; two thirds processed (kept), a sixth failed after 5 attempts with long
//               stack traces, the rest waiting; 20 job log lines each
//   thumbnails  THUMBS jobs returning a 50 KB base64 thumbnail, removed on completion: their return
//               values live on in the events stream only (~100 MB)
//   records     RECORDS jobs whose data is a 10-50 KB JSON document with many keys (an order: a
//               customer, line items, addresses; a few secret-looking fields), processed and kept
//   webhooks    small jobs (~200 B) for contrast
// usage: NODE_PATH=tests/node/node_modules node bench/payload_dataset.js <redis-url> <prefix> [DOCS THUMBS RECORDS]
const crypto = require('crypto');

const [url, prefix, docsArg, thumbsArg, recordsArg] = process.argv.slice(2);
const DOCS = Number(docsArg || 360);
const THUMBS = Number(thumbsArg || 2000);
const RECORDS = Number(recordsArg || 3000);
const { Queue, Worker } = require('bullmq5');
const IORedis = require(require.resolve('ioredis', { paths: [require.resolve('bullmq5')] }));

const say = (s) => process.stderr.write(`\rpayload dataset: ${s}`.padEnd(70));
const conn = () => new IORedis(url, { maxRetriesPerRequest: null });
const b64 = (chars) => crypto.randomBytes(Math.ceil(chars * 3 / 4)).toString('base64').slice(0, chars);
const DOC_SIZES = [50, 100, 250, 500, 1024].map((k) => k * 1024);
const word = (i) => ['alpha', 'bravo', 'charlie', 'delta', 'echo', 'foxtrot', 'golf', 'hotel'][i % 8];

function order(i) {
  // A 10-50 KB document with many keys, as an e-commerce or CRM job carries.
  const items = [];
  for (let k = 0; k < 20 + (i % 5) * 30; k++) {
    items.push({ sku: `SKU-${i}-${k}`, name: `${word(k)} ${word(i + k)} item`, qty: 1 + (k % 4),
                 price: { amount: (k * 137) % 10000, currency: 'EUR' },
                 attributes: { color: word(k + 3), size: ['S', 'M', 'L'][k % 3], fragile: k % 7 === 0 },
                 warehouse: { id: `wh-${k % 9}`, aisle: k % 40, bin: `${word(k)}-${k}` } });
  }
  return {
    orderId: `ord-${i}`, createdAt: new Date(1764000000000 + i * 1000).toISOString(),
    customer: { id: `cus-${i % 997}`, name: `Customer ${i}`, email: `customer${i}@example.com`,
                sessionId: `sess-${crypto.randomBytes(8).toString('hex')}`, tier: word(i) },
    shipping: { street: `${i} ${word(i)} street`, city: word(i + 1), zip: `${10000 + i}`, country: 'DE' },
    billing: { street: `${i} ${word(i)} street`, city: word(i + 1), zip: `${10000 + i}`, country: 'DE' },
    payment: { method: 'card', last4: `${1000 + (i % 9000)}`, apiKey: i % 10 === 0 ? `pk-${i}` : undefined },
    items, notes: `order ${i}: deliver ${word(i)} ${word(i + 2)}`,
  };
}

async function fill(q, jobs) {
  for (let i = 0; i < jobs.length; i += 50) await q.addBulk(jobs.slice(i, i + 50));
}

async function drain(name, processor, total, opts = {}) {
  let done = 0;
  await new Promise((resolve) => {
    const w = new Worker(name, async (job) => {
      try {
        return await processor(job);
      } finally {
        done += 1;
        if (done % 200 === 0) say(`${name}: ${done}/${total}`);
        if (done === total) setImmediate(() => w.close().then(resolve));
      }
    }, { connection: conn(), prefix, concurrency: 16, ...opts });
    w.on('error', () => {});
  });
}

async function main() {
  // documents: the processed ones first, then those left waiting
  const docs = new Queue('documents', { connection: conn(), prefix });
  const processed = Math.floor(DOCS * 5 / 6);
  const mk = (i) => ({ name: 'convert', data: {
    pdf: b64(DOC_SIZES[i % DOC_SIZES.length]), filename: `contract-${i}.pdf`, pages: 1 + (i % 40),
    owner: { id: `u-${i % 50}`, email: `owner${i % 50}@example.com` }, fail: i % 5 === 4,
  }, opts: { attempts: 5, backoff: { type: 'fixed', delay: 1 }, removeOnComplete: false } });
  await fill(docs, Array.from({ length: processed }, (_, i) => mk(i)));
  let attempts = 0;
  const failures = processed / 5 * 5;   // one in five fails all 5 attempts
  await drain('documents', async (job) => {
    for (let k = 0; k < 20; k++) await job.log(`page ${k + 1}/${job.data.pages}: rendered ${job.data.filename} at 300 dpi`);
    if (job.data.fail) {
      attempts += 1;
      const err = new Error(`render of ${job.data.filename} failed: ghostscript exited with code 1 (attempt ${job.attemptsMade + 1})`);
      err.stack = `${err.message}\n` + Array.from({ length: 40 }, (_, k) =>
        `    at Renderer.page${k} (/srv/app/node_modules/pdf-render/lib/renderer.js:${100 + k}:${k + 5})`).join('\n');
      throw err;
    }
    return { pages: job.data.pages, bytes: job.data.pdf.length };
  }, processed + failures - processed / 5);
  await fill(docs, Array.from({ length: DOCS - processed }, (_, i) => mk(processed + i)));
  say(`documents: ${DOCS} (${attempts} failed attempts)\n`);

  const thumbs = new Queue('thumbnails', { connection: conn(), prefix });
  await fill(thumbs, Array.from({ length: THUMBS }, (_, i) => ({ name: 'thumbnail',
    data: { source: `s3://docs/${i}.pdf`, width: 256 }, opts: { removeOnComplete: true } })));
  await drain('thumbnails', async () => ({ thumb: b64(50 * 1024), width: 256, format: 'png' }), THUMBS);
  say(`thumbnails: ${THUMBS}\n`);

  const records = new Queue('records', { connection: conn(), prefix });
  await fill(records, Array.from({ length: RECORDS }, (_, i) => ({ name: 'sync-order', data: order(i),
    opts: { removeOnComplete: false } })));
  await drain('records', async (job) => ({ synced: job.data.orderId }), RECORDS);
  say(`records: ${RECORDS}\n`);

  const hooks = new Queue('webhooks', { connection: conn(), prefix });
  await fill(hooks, Array.from({ length: 5000 }, (_, i) => ({ name: 'deliver',
    data: { url: `https://hooks.example.com/${i}`, event: 'order.created', id: i } })));
  say('webhooks: 5000 waiting\n');
  process.exit(0);
}
main().catch((e) => { console.error(e); process.exit(1); });
