// Drives the ff admin page in headless Chromium: log in, add an override for
// `tester`, switch a kill switch off (accepting the confirmation), and save a
// screenshot of the flag page. Env: FF_BASE (app URL), FF_TOKEN, FF_SCREENSHOT.
import { chromium } from 'playwright-core';

const base = process.env.FF_BASE;
const token = process.env.FF_TOKEN;
const screenshot = process.env.FF_SCREENSHOT;
const lead = 'MINIMUM_TIME_REQUIRED_BEFORE_BOOKING';

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  page.setDefaultTimeout(15000);
  const check = (cond, what) => { if (!cond) throw new Error(what); };

  await page.goto(`${base}/admin`);
  check(page.url().endsWith('/admin/login'), `not sent to the login page: ${page.url()}`);
  await page.fill('input[name=token]', token);
  await page.click('button:has-text("Log in")');
  await page.waitForURL(`${base}/admin`);
  check(await page.isVisible(`text=${lead}`), 'the flag list does not show the lead-time flag');

  // Add an override for tester on the lead-time flag.
  await page.click(`a:has-text("${lead}")`);
  await page.waitForURL(`${base}/admin/flags/${lead}`);
  const add = page.locator('form[action$="/overrides"]');
  await add.locator('input[name=user_id]').fill('tester');
  await add.locator('input[name=value]').fill('0s');
  await add.locator('input[name=reason]').fill('QA books an hour ahead');
  await add.locator('button').click();
  await page.waitForURL(`${base}/admin/flags/${lead}`);
  check(await page.isVisible('td:has-text("tester")'), 'the override is not listed');

  // Flip the credits kill switch off: the page asks first.
  await page.goto(`${base}/admin/flags/CREDITS_PAYMENTS`);
  let asked = '';
  page.once('dialog', async (d) => { asked = d.message(); await d.accept(); });
  await page.click('button:has-text("Turn off")');
  await page.waitForURL(`${base}/admin/flags/CREDITS_PAYMENTS`);
  check(asked.includes('OFF for everyone'), `no confirmation before switching off: ${asked}`);
  check(await page.isVisible('span.off'), 'the flag does not show as off');
  check(await page.isVisible('td:has-text("flag.update")'), 'the history does not show the change');

  await page.goto(`${base}/admin/flags/${lead}`);
  await page.screenshot({ path: screenshot, fullPage: true });
  console.log('browser test ok');
} finally {
  await browser.close();
}
