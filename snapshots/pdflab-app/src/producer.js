// The API side: what an upload, a finished conversion and the nightly jobs enqueue.
// usage: node src/producer.js <uploads>      (REDIS_URL, WEBHOOK_URL from the environment)
const { readFileSync } = require('fs');
const path = require('path');
const {
  conversionQueue, thumbnailQueue, webhookQueue, ocrQueue, imageQueue, reportQueue, emailQueue,
} = require('./queues');

const WEBHOOK_URL = process.env.WEBHOOK_URL || 'http://127.0.0.1:9/hooks';
const UPLOAD_DIR = process.env.UPLOAD_DIR || '/var/lib/pdflab/uploads';

// An uploaded PDF, as the upload handler (multer) left it on disk.
function upload(n) {
  return readFileSync(path.join(UPLOAD_DIR, `upload-${n}.pdf`));
}

async function onUpload(userId, n) {
  const pdf = upload(n);
  // the bug the incident shows: the whole file travels in the job, base64 in Redis
  await conversionQueue.add('convert', {
    userId, filename: `upload-${n}.pdf`, file: pdf.toString('base64'), target: 'docx',
  });
  await thumbnailQueue.add('thumbnail', { userId, filename: `upload-${n}.pdf`, page: 1 });
  await ocrQueue.add('ocr', { userId, filename: `upload-${n}.pdf`, pages: 40 });
}

async function main() {
  const uploads = Number(process.argv[2] || 60);
  for (let n = 0; n < uploads; n++) await onUpload(`user-${n % 17}`, n);
  for (let n = 0; n < 30; n++) {
    await webhookQueue.add('deliver', { url: `${WEBHOOK_URL}/customer-${n % 5}`, event: 'conversion.finished', n });
    await emailQueue.add({ to: `user-${n}@example.com`, template: 'conversion-ready' });
    await imageQueue.add('resize', { userId: `user-${n % 17}`, filename: `upload-${n}.png`, width: 1024 });
  }
  for (let n = 0; n < 12; n++) await reportQueue.add('usage-report', { customer: `customer-${n}`, month: '2026-11' });
  await reportQueue.add('monthly-invoice', { month: '2026-12' }, { delay: 24 * 3600 * 1000 });
  await Promise.all([conversionQueue, thumbnailQueue, webhookQueue, ocrQueue, imageQueue, reportQueue, emailQueue]
    .map((q) => q.close()));
  process.exit(0);
}

main().catch((err) => { console.error(err); process.exit(1); });
