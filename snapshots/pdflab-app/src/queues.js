// The queues, one place: names, prefixes and the options every job gets.
const { Queue } = require('bullmq');
const Bull = require('bull');
const IORedis = require('ioredis');

const REDIS_URL = process.env.REDIS_URL || 'redis://127.0.0.1:6379';
const connection = new IORedis(REDIS_URL, { maxRetriesPerRequest: null });
const prefix = 'pdflab';

// Upload -> convert (CloudConvert) -> download. Retried "a few" times.
const conversionQueue = new Queue('conversion', {
  connection, prefix,
  defaultJobOptions: { attempts: 10, backoff: 1000 },
});

const thumbnailQueue = new Queue('thumbnails', {
  connection, prefix,
  defaultJobOptions: {
    attempts: 3,
    backoff: { type: 'exponential', delay: 2000 },
    removeOnComplete: { count: 1000 },
    removeOnFail: { count: 5000 },
  },
});

// Customer webhooks: "job finished" callbacks to the customer's URL.
const webhookQueue = new Queue('webhooks', {
  connection, prefix,
  defaultJobOptions: {
    attempts: 5,
    backoff: { type: 'exponential', delay: 200 },
    removeOnComplete: { count: 1000 },
    removeOnFail: { count: 5000 },
  },
});

const ocrQueue = new Queue('ocr', {
  connection, prefix,
  defaultJobOptions: { attempts: 2, backoff: { type: 'exponential', delay: 5000 }, removeOnComplete: 100, removeOnFail: 1000 },
});

const imageQueue = new Queue('images', {
  connection, prefix,
  defaultJobOptions: { attempts: 2, backoff: { type: 'exponential', delay: 1000 }, removeOnComplete: 1000, removeOnFail: 1000 },
});

const reportQueue = new Queue('reports', {
  connection, prefix,
  defaultJobOptions: { attempts: 3, backoff: { type: 'exponential', delay: 60000 }, removeOnComplete: 50, removeOnFail: 500 },
});

// Transactional email still runs on Bull 4 (not migrated to BullMQ yet).
const emailQueue = new Bull('email', REDIS_URL, {
  prefix: 'legacy',
  defaultJobOptions: {
    attempts: 3,
    backoff: { type: 'exponential', delay: 1000 },
    timeout: 30000,
    removeOnComplete: 500,
    removeOnFail: 1000,
  },
});

module.exports = {
  REDIS_URL, connection, prefix,
  conversionQueue, thumbnailQueue, webhookQueue, ocrQueue, imageQueue, reportQueue, emailQueue,
};
