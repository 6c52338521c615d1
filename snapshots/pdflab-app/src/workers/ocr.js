// OCR runs on its own (big) machines: long jobs, one page at a time.
// usage: node src/workers/ocr.js        (REDIS_URL)
const { Worker, UnrecoverableError } = require('bullmq');
const pino = require('pino');
const { connection, prefix } = require('../queues');

const logger = pino();
const PAGE_MS = Number(process.env.OCR_PAGE_MS || 1500);

const worker = new Worker('ocr', async (job, token, signal) => {
  if (!job.data.pages) throw new UnrecoverableError('no pages to read');
  for (let page = 1; page <= job.data.pages; page++) {
    if (signal && signal.aborted) throw new Error('cancelled');
    await new Promise((resolve) => setTimeout(resolve, PAGE_MS));   // the OCR engine, one page
    await job.updateProgress(Math.round((100 * page) / job.data.pages));
  }
  return { pages: job.data.pages };
}, { connection, prefix, concurrency: 2, lockDuration: 10000, metrics: { maxDataPoints: 10080 } });

worker.on('active', (job) => logger.info({ jobId: job.id }, 'ocr started'));
worker.on('failed', (job, err) => logger.error({ jobId: job && job.id, err: err.message }, 'ocr failed'));
worker.on('stalled', (jobId) => logger.warn({ jobId }, 'ocr job stalled'));

process.on('SIGTERM', async () => {
  await worker.close();
  process.exit(0);
});
