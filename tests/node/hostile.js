// Queue names, job names, ids, data, failed reasons, stack traces and job logs carrying
// markup, script breakouts, event handlers, javascript: URLs, HTML comments and Unicode bidi
// controls, written and failed by the real library. Any of them that runs in a browser sets
// <html data-pwned="..."> (and tries a dialog), so a test can see it.
// usage: node hostile.js <lib> <redis-url> <prefix>     lib: bullmq5
const [lib, url, prefix] = process.argv.slice(2);
const mod = require(lib);
const IORedis = require(require.resolve('ioredis', { paths: [require.resolve(lib)] }));
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

const pwn = (tag) => `document.documentElement.dataset.pwned='${tag}';alert('${tag}')`;
const H = [
  `<script>${pwn('script')}</script>`,
  `</script><script>${pwn('breakout')}</script>`,
  `<img src=x onerror="${pwn('img')}">`,
  `<svg onload="${pwn('svg')}"></svg>`,
  `<a href="javascript:${pwn('href')}">click</a>`,
  `<!-- <script>${pwn('comment')}</script> -->`,
  `"><iframe srcdoc="<script>parent.${pwn('iframe')}</script>">`,
  `\u202Egnp.exe\u202C \u2066isolate\u2069 \u200Fmark`,
  `{{7*7}} \${7*7} <style>*{display:none}</style>`,
];

async function main() {
  const conn = () => new IORedis(url, { maxRetriesPerRequest: null });
  const names = ['hostile<img src=x onerror="' + pwn('queue') + '">', 'plain-hostile'];
  for (const name of names) {
    const q = new mod.Queue(name, { connection: conn(), prefix });
    const w = new mod.Worker(name, async (job) => {
      await job.log(H[job.data.i % H.length]);
      const e = new Error(`failed on ${H[job.data.i % H.length]}`);
      e.stack = `Error: ${H[(job.data.i + 1) % H.length]}\n    at handler (/app/${H[2]}.js:1:1)`;
      throw e;
    }, { connection: conn(), prefix });
    for (let i = 0; i < H.length; i++) {
      await q.add(H[i], { i, text: H[i], nested: { html: H[(i + 3) % H.length] } },
                  { jobId: `id-${i}-${H[(i + 2) % H.length].replace(/:/g, '')}`, attempts: 1 });
    }
    for (let k = 0; k < 400; k++) {
      const c = await q.getJobCounts();
      if ((c.failed || 0) >= H.length) break;
      await sleep(25);
    }
    await w.close();
    // a few left waiting, so the backlog tables and plots show them too
    for (let i = 0; i < 3; i++) await q.add(H[i], { text: H[i] }, { delay: 3600000 });
    await q.close();
  }
  process.stdout.write(JSON.stringify({ hostile: H, queues: names }));
  process.exit(0);
}
main().catch((e) => { console.error(e); process.exit(1); });
