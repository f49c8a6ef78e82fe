// The popup: sign in, the balance, buying, and the controls for captions, Ask and catch-up.
// Everything it knows comes from the kit (shared storage) and from the service worker's
// state in chrome.storage.session.
import { kit, LIVE_STATE } from './shared.js';

const $ = (id) => document.getElementById(id);
let live = {};

function showError(error) {
  $('error').textContent = error ? (error.message || String(error)) : '';
}

/** Ask the service worker to do something that must outlive this popup. */
async function worker(type, fields = {}) {
  const answer = await chrome.runtime.sendMessage({ type, ...fields });
  if (!answer?.ok) throw Object.assign(new Error(answer?.error?.message || 'failed'), answer?.error);
  return answer.value;
}

async function render() {
  const user = await kit.currentUser();
  $('signed-out').hidden = Boolean(user);
  $('signed-in').hidden = !user;
  if (!user) return;
  $('who').textContent = user.email;
  const { balance } = await kit.getBalance();
  $('balance').textContent = balance;
}

function renderLive() {
  $('start').hidden = Boolean(live.running);
  $('stop').hidden = !live.running;
  const box = $('captions');
  box.replaceChildren(...(live.finals || []).map((text) => Object.assign(document.createElement('div'), { textContent: text })));
  if (live.partial) box.append(Object.assign(document.createElement('div'), { className: 'partial', textContent: live.partial }));
  box.scrollTop = box.scrollHeight;
  const bill = live.bill;
  $('bill').textContent = bill && !live.running ? `Last session: ${bill.duration_minutes} min, ${bill.credits_used} credits.` : '';
  const catchup = live.catchup;
  $('catchup-status').textContent = catchup ? (catchup.error?.message || catchup.status) : '';
  $('summary').replaceChildren();
  if (catchup?.result) {
    const points = document.createElement('ul');
    for (const point of catchup.result.key_points || []) points.append(Object.assign(document.createElement('li'), { textContent: point }));
    $('summary').append(Object.assign(document.createElement('p'), { textContent: catchup.result.summary }), points);
  }
  if (live.error) showError(live.error);
}

async function renderPackages() {
  const { packages } = await kit.getCatalogue();
  $('packages').replaceChildren(...packages.map((pack) => {
    const button = document.createElement('button');
    button.textContent = `${pack.credits} credits – ${(pack.amount / 100).toFixed(2)} ${pack.currency.toUpperCase()}`;
    button.dataset.package = pack.id;
    button.addEventListener('click', () => worker('buy', { packageId: pack.id }).catch(showError)); // Checkout opens in a tab
    return button;
  }));
}

async function signIn(action) {
  showError(null);
  const email = $('email').value.trim();
  const password = $('password').value;
  try {
    if (action === 'register') await kit.register({ email, password });
    else await kit.login(email, password);
    await render();
  } catch (error) {
    showError(error);
  }
}

$('sign-in').addEventListener('submit', (event) => { event.preventDefault(); signIn('login'); });
$('register').addEventListener('click', () => { if ($('sign-in').reportValidity()) signIn('register'); });
$('logout').addEventListener('click', async () => { await kit.logout(); await render(); });
$('start').addEventListener('click', async () => {
  showError(null);
  const [tab] = await chrome.tabs.query({ active: true, currentWindow: true });
  await worker('captions.start', { tabId: tab.id }).catch(showError);
});
$('stop').addEventListener('click', () => worker('captions.stop').catch(showError));
$('ask-form').addEventListener('submit', async (event) => {
  event.preventDefault();
  showError(null);
  $('answer').textContent = '…';
  try {
    const { answer } = await kit.ask($('question').value, live.transcript || '(nothing has been captioned yet)');
    $('answer').textContent = answer;
  } catch (error) {
    $('answer').textContent = '';
    showError(error);
  }
});
$('catchup').addEventListener('click', () => { showError(null); worker('catchup').catch(showError); });

kit.onBalanceChanged((balance) => { $('balance').textContent = balance; });
kit.onSignedOut(() => render());
chrome.storage.session.onChanged.addListener((changes) => {
  if (changes[LIVE_STATE]) { live = changes[LIVE_STATE].newValue || {}; renderLive(); }
});

(async () => {
  live = (await chrome.storage.session.get(LIVE_STATE))[LIVE_STATE] || {};
  renderLive();
  await Promise.all([render(), renderPackages()]).catch(showError);
})();
