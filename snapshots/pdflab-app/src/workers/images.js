// Image resizing for the gallery view.
// usage: node src/workers/images.js <jobs to run before exiting>      (REDIS_URL)
const { Worker } = require('bullmq');
const pino = require('pino');
const { connection, prefix, imageQueue } = require('../queues');

const logger = pino();
const rendered = new Map();   // "cache" of rendered sizes: nothing ever evicts it

const worker = new Worker('images', async (job) => {
  const rows = Array.from({ length: 100000 }, (_, i) => ({ i, file: job.data.filename, width: job.data.width }));
  rendered.set(job.id, rows);
  await job.updateProgress(100);
  logger.info({ jobId: job.id, queue: 'images', memory: process.memoryUsage() }, 'image resized');
  return { width: job.data.width, pixels: rows.length };
}, { connection, prefix, concurrency: 1, metrics: { maxDataPoints: 10080 } });

worker.on('failed', (job, err) => logger.error({ jobId: job && job.id, err: err.message }, 'resize failed'));

const stopAfter = Number(process.argv[2] || Infinity);
let done = 0;
worker.on('completed', async () => {
  done += 1;
  if (done >= stopAfter) {
    await worker.close();
    await imageQueue.close();
    process.exit(0);
  }
});

process.on('SIGTERM', async () => {
  await worker.close();
  process.exit(0);
});
