// Operator commands.  usage: node src/admin.js pause|resume <queue>      (REDIS_URL)
const queues = require('./queues');

const byName = {
  conversion: queues.conversionQueue, thumbnails: queues.thumbnailQueue, webhooks: queues.webhookQueue,
  ocr: queues.ocrQueue, images: queues.imageQueue, reports: queues.reportQueue,
};

async function main() {
  const [command, name] = process.argv.slice(2);
  const queue = byName[name];
  if (!queue || !['pause', 'resume'].includes(command)) throw new Error('usage: admin.js pause|resume <queue>');
  await queue[command]();
  console.log(`${name}: ${command}d`);
  process.exit(0);
}

main().catch((err) => { console.error(err.message); process.exit(1); });
