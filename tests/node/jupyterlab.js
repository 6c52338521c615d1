// A notebook clicked through in a real JupyterLab, as a user would: Playwright (playwright-core,
// no browser download) drives the system Chromium.
//
//   node jupyterlab.js BASE_URL TOKEN NOTEBOOK OUT_DIR
//
// Opens NOTEBOOK, runs all cells (JupyterLab's own "run all" command), waits for the kernel,
// then uses the job inspector (a job in one queue, then a queue whose first job has the same
// id: $INSPECT, JSON [queue a, queue b, job id]) and a threshold slider ($SLIDER, name=value). Prints one JSON line of what it saw; screenshots go to OUT_DIR.
'use strict';
const { chromium } = require('playwright-core');
const path = require('path');

const [base, token, notebook, out] = process.argv.slice(2);
const executablePath = process.env.CHROMIUM || '/usr/bin/chromium';
const seen = { errors: [], console: [] };

async function main() {
  const browser = await chromium.launch({
    executablePath,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync'],
  });
  try {
    const page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
    page.on('pageerror', (e) => seen.errors.push(String(e)));
    page.on('console', (m) => { if (m.type() === 'error') seen.console.push(m.text().slice(0, 300)); });
    await page.goto(`${base}/lab/tree/${notebook}?token=${token}`);
    await page.waitForFunction(() => window.jupyterapp && window.jupyterapp.shell.currentWidget
      && window.jupyterapp.shell.currentWidget.context && window.jupyterapp.shell.currentWidget.context.isReady,
    null, { timeout: 120000 });
    await page.waitForFunction(() => {
      const s = window.jupyterapp.shell.currentWidget.sessionContext;
      return s.session && s.session.kernel && s.session.kernel.status === 'idle';
    }, null, { timeout: 120000 });
    const t0 = Date.now();
    await page.evaluate(() => window.jupyterapp.commands.execute('notebook:run-all-cells'));
    // Done when every code cell has run and the kernel is idle again.
    await page.waitForFunction(() => {
      const w = window.jupyterapp.shell.currentWidget;
      const cells = w.content.model.cells;
      for (let i = 0; i < cells.length; i++) {
        const c = cells.get(i);
        if (c.type === 'code' && (c.executionCount === null || c.executionState === 'running')) return false;
      }
      return w.sessionContext.session.kernel.status === 'idle';
    }, null, { timeout: 300000, polling: 500 });
    seen.run_all_s = (Date.now() - t0) / 1000;
    await page.waitForTimeout(1500);   // widgets and figures draw after the last reply
    Object.assign(seen, await page.evaluate(() => {
      const cells = window.jupyterapp.shell.currentWidget.content.model.cells;
      const errors = [];
      let code = 0;
      for (let i = 0; i < cells.length; i++) {
        const c = cells.get(i);
        if (c.type !== 'code') continue;
        code += 1;
        for (const o of c.toJSON().outputs || []) {
          if (o.output_type === 'error') errors.push(`${o.ename}: ${o.evalue}`.slice(0, 300));
        }
      }
      return {
        code_cells: code, cell_errors: errors,
        figures_expected: Array.from({ length: cells.length }, (_, i) => cells.get(i))
          .filter((c) => c.type === 'code')
          .map((c) => (c.toJSON().outputs || []).filter((o) => o.data && o.data['application/vnd.plotly.v1+json']).length)
          .reduce((a, b) => a + b, 0),
        // a figure counts as drawn once plotly has put its SVG in it
        figures_drawn: [...document.querySelectorAll('.js-plotly-plot')].filter((d) => d.querySelector('.main-svg')).length,
        widgets_drawn: document.querySelectorAll('.jupyter-widgets').length,
        widget_errors: document.querySelectorAll('.jupyter-widgets-error-widget, .jp-RenderedText[data-mime-type="application/vnd.jupyter.stderr"] .ansi-red-fg').length,
      };
    }));
    await page.screenshot({ path: path.join(out, 'jupyterlab-run-all.png') });

    // The job inspector: the VBox whose dropdowns are labelled "queue" and "job".
    const inspector = page.locator('.widget-vbox').filter({ has: page.locator('.widget-dropdown label', { hasText: /^job$/ }) }).last();
    await inspector.scrollIntoViewIfNeeded();
    const queueSel = inspector.locator('.widget-dropdown').filter({ has: page.locator('label', { hasText: /^queue$/ }) }).locator('select');
    const jobSel = inspector.locator('.widget-dropdown').filter({ has: page.locator('label', { hasText: /^job$/ }) }).locator('select');
    const card = async () => (await inspector.locator('.widget-html h4').first().textContent({ timeout: 20000 })).trim();
    const pick = async (sel, label) => {
      await sel.selectOption({ label });
      await page.waitForTimeout(300);
    };
    seen.inspector_first = await card();
    const labelOf = async (sel, value) => sel.locator(`option`).evaluateAll(
      // (ipywidgets writes the labels' spaces as no-break spaces)
      (os, v) => (os.find((o) => o.textContent.split('·')[0].trim() === v) || {}).textContent, value);
    const [qa, qb, job] = JSON.parse(process.env.INSPECT || '["bull:backlog", "legacy:timer", "1"]');
    await pick(queueSel, qa);
    await page.waitForFunction((q) => [...document.querySelectorAll('.widget-html h4')].some((h) => h.textContent.startsWith(q + ' /')), qa, { timeout: 20000 });
    await pick(jobSel, await labelOf(jobSel, job));
    await page.waitForFunction((t) => [...document.querySelectorAll('.widget-html h4')].some((h) => h.textContent.trim() === t), `${qa} / job ${job}`, { timeout: 20000 });
    seen.inspector_a = await card();
    await pick(queueSel, qb);
    await page.waitForTimeout(1500);
    seen.inspector_b = await card();
    seen.inspector_b_job = (await jobSel.evaluate((s) => s.options[s.selectedIndex] && s.options[s.selectedIndex].textContent)) || null;
    await inspector.screenshot({ path: path.join(out, 'jupyterlab-job-inspector.png') });

    // A threshold slider: type a value into its readout, as a user would, and read what changed.
    const controls = page.locator('.widget-vbox').filter({ has: page.locator('.widget-slider') }).last();
    await controls.scrollIntoViewIfNeeded();
    const [name, value] = (process.env.SLIDER || 'max_attempts=1').split('=');
    const slider = controls.locator('.widget-slider').filter({ has: page.locator('label', { hasText: name }) }).first();
    seen.slider = (await slider.locator('label').first().textContent()).trim();
    const readout = slider.locator('.widget-readout');
    const before = (await readout.textContent()).trim();
    await readout.click();
    await page.keyboard.press('Control+A');
    await page.keyboard.type(value);
    await page.keyboard.press('Enter');
    // the kernel re-runs the detectors (twice on the first move): the widget's text then says so
    await controls.locator('.widget-html', { hasText: 'finding(s) at these thresholds' })
      .waitFor({ timeout: 60000 }).catch(() => {});
    seen.slider_before = before;
    seen.slider_after = (await readout.textContent()).trim();
    seen.threshold_output = (await controls.innerText()).slice(0, 4000);
    await controls.screenshot({ path: path.join(out, 'jupyterlab-threshold.png') });
  } finally {
    await browser.close();
  }
}

main().then(() => {
  process.stdout.write(JSON.stringify(seen) + '\n');
}, (e) => {
  seen.failure = String(e && e.stack || e).slice(0, 3000);
  process.stdout.write(JSON.stringify(seen) + '\n');
  process.exit(1);
});
