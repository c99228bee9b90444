// Change requests, a scheduled change and a webhook in headless Chromium, as three
// people: the admin adds a webhook on the Webhooks page (its secret is printed for the
// test to check signatures); Ann's change to a config flag is held in a request; Bob
// approves it from the Requests page; Ann schedules a change a few seconds ahead in
// her own time zone (Berlin). Env: FF_BASE, FF_ROOT, FF_ANN, FF_BOB, FF_HOOK,
// FF_REQUEST_SCREENSHOT.
import { chromium } from 'playwright-core';

const base = process.env.FF_BASE;
const lead = 'MINIMUM_TIME_REQUIRED_BEFORE_BOOKING';
const check = (cond, what) => { if (!cond) throw new Error(what); };

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});

async function as(token, options) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 }, ...options });
  const page = await context.newPage();
  page.setDefaultTimeout(15000);
  page.on('pageerror', (e) => console.error(`page error: ${e.message}`));
  await page.goto(`${base}/admin/login`);
  await page.fill('input[name=token]', token);
  await page.click('button:has-text("Log in")');
  await page.waitForURL(`${base}/admin`);
  return page;
}

try {
  // The admin adds a webhook for flag changes and requests.
  const root = await as(process.env.FF_ROOT);
  await root.click('a:has-text("Webhooks")');
  await root.fill('input[name=url]', process.env.FF_HOOK);
  await root.check('input[name=events][value=flag]');
  await root.check('input[name=events][value=request]');
  await root.click('button:has-text("Add webhook")');
  const secret = (await root.locator('#secret').innerText()).trim();
  check(secret.length === 64, `no secret shown: ${secret}`);
  console.log(`secret=${secret}`);

  // Ann's change to a config flag waits for another editor.
  const ann = await as(process.env.FF_ANN, { timezoneId: 'Europe/Berlin' });
  await ann.goto(`${base}/admin/flags/${lead}`);
  check(await ann.isVisible('text=Changes to this flag wait for a second editor'), 'the policy is not shown');
  const form = ann.locator('form[action$="/value"]');
  await form.locator('input[name=value]').fill('12h');
  await form.locator('input[name=reason]').fill('shorter lead time');
  await form.locator('button:has-text("Save value")').click();
  await ann.waitForURL(/\/admin\/requests\/1\?held=1$/);
  check(await ann.isVisible('text=Your change was not made yet'), 'Ann is not told her change waits');
  check(!(await ann.isVisible('button:has-text("Approve")')), 'Ann may approve her own request');

  // Bob finds it under Requests and approves it.
  const bob = await as(process.env.FF_BOB);
  await bob.click('a:has-text("Requests")');
  check(await bob.isVisible('h2:has-text("Open (1)")'), 'the request is not listed as open');
  await bob.click('td a:has-text("1")');
  await bob.waitForURL(`${base}/admin/requests/1`);
  check(await bob.isVisible(`li:has-text("${lead}: value = \\"12h\\"")`), 'the change is not shown');
  await bob.screenshot({ path: process.env.FF_REQUEST_SCREENSHOT, fullPage: true });
  await bob.click('button:has-text("Approve and apply")');
  await bob.waitForURL(`${base}/admin/requests/1`);
  check(await bob.isVisible('span.on:has-text("applied")'), 'the request is not applied');
  await bob.goto(`${base}/admin/flags/${lead}`);
  check(await bob.isVisible('text=approved by bob'), 'the history does not name the approver');

  // Ann schedules the new pricing fifteen seconds ahead, in Berlin time.
  await ann.goto(`${base}/admin/flags/NEW_CHECKOUT_PRICING`);
  const at = await ann.evaluate(() => {
    // Far enough ahead that a slow submit never lands after it.
    const d = new Date(Date.now() + 15000);
    const two = (n) => String(n).padStart(2, '0');
    return `${d.getFullYear()}-${two(d.getMonth() + 1)}-${two(d.getDate())}T${two(d.getHours())}:${two(d.getMinutes())}:${two(d.getSeconds())}`;
  });
  const pricing = ann.locator('form[action$="/value"]');
  await pricing.locator('select[name=value]').selectOption('true');
  await pricing.locator('input[name=apply_at]').fill(at);
  await pricing.locator('button:has-text("Save value")').click();
  await ann.waitForURL(/\/admin\/requests\/2$/);
  check(await ann.isVisible('text=not needed (only its time holds it)'), 'the schedule is not shown');
  console.log(`scheduled_local=${at}`);
  console.log('browser test ok');
} finally {
  await browser.close();
}
