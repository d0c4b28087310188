/* consentd cookie banner (docs/banner.md): dependency-free, served as is.
   <script src="BASE/v1/public/banner.js" data-key="pk_..." async></script> */
(() => {
  'use strict';
  if (window.consentd) return; // included twice: the first copy stays in charge
  const PATH = '/v1/public/banner.js';
  const tag = document.currentScript || document.querySelector('script[data-key][src*="' + PATH + '"]');
  if (!tag) return;
  const KEY = tag.getAttribute('data-key') || '';
  const BASE = tag.src.slice(0, tag.src.indexOf(PATH));
  const GPC = navigator.globalPrivacyControl === true;
  const gtag = (...a) => { if (typeof window.gtag === 'function') window.gtag(...a); };

  // Consent Mode v2 defaults, synchronously, before the page's tags can read them.
  const denied = { ad_storage: 'denied', analytics_storage: 'denied', ad_user_data: 'denied', ad_personalization: 'denied',
    functionality_storage: 'denied', personalization_storage: 'denied' };
  gtag('consent', 'default', Object.assign({}, denied, { wait_for_update: 500 }));

  const randomId = () => Array.from(crypto.getRandomValues(new Uint8Array(16)), (b) => b.toString(16).padStart(2, '0')).join('');

  // The device id, issued by consentd with the first choice (a made-up one is refused): sent only to the
  // two public endpoints below. null until then.
  const STORED = 'consentd_device';
  let device = null;
  try { device = localStorage.getItem(STORED); } catch (e) { /* storage blocked */ }
  if (!/^[A-Za-z0-9_-]{16,128}$/.test(device || '')) device = null;
  const remember = (id) => {
    device = id;
    try { if (id) localStorage.setItem(STORED, id); else localStorage.removeItem(STORED); } catch (e) { /* in memory, for this page */ }
  };
  // A 422 naming device_id: an id consentd did not issue (one made by an older banner, or for another site).
  const refusesDevice = (r) => r.status === 422 && r.clone().json()
    .then((p) => (p.errors || []).some((e) => (e.loc || []).indexOf('device_id') >= 0), () => false);

  const endpoint = (path) => BASE + path + '?key=' + encodeURIComponent(KEY);
  const getJSON = (path, refused) => fetch(endpoint(path), { mode: 'cors', credentials: 'omit' })
    .then(async (r) => {
      if (refused && await refusesDevice(r)) return refused();
      if (!r.ok) throw new Error('HTTP ' + r.status);
      return r.json();
    });

  const DEFAULTS = { // the server sends the texts; these only fill gaps
    title: 'Cookies on this site', description: 'Optional cookies stay off unless you turn them on.',
    accept_all: 'Accept all', reject_all: 'Reject all', manage: 'Manage choices', save: 'Save choices',
    necessary_title: 'Strictly necessary', necessary_description: 'Needed for the site to work.',
    always_on: 'Always on', privacy_link: 'Privacy policy',
    gpc_note: 'Your browser sends a Global Privacy Control signal, and we honour it.',
    error: 'Sorry, your choice could not be saved. Please try again.',
  };

  let config = null;   // GET /v1/public/banner
  let standing = {};   // this device's choices as the server last gave them
  let applied = null;  // the choices in force on this page; null until one is known (fail closed)
  let wantOpen = false; // open() was called before the configuration arrived
  let ui = null, lastFocus = null, busy = false;
  let pending = null;  // {body, key}: a retry of the same choice reuses its Idempotency-Key
  const ran = new WeakSet();

  const text = (k) => (config.texts && config.texts[k]) || DEFAULTS[k];
  const keys = () => config.categories.map((c) => c.key);
  const every = (f) => { const o = {}; keys().forEach((k) => { o[k] = f(k); }); return o; };

  function apply(choices) {
    applied = every((k) => choices[k] === true);
    const granted = (k) => applied[k];
    // A signal is granted when every category listing it is granted; unlisted signals stay denied.
    const listing = {};
    config.categories.forEach((c) => (c.consent_mode || []).forEach((s) => { (listing[s] = listing[s] || []).push(c.key); }));
    const update = Object.assign({}, denied);
    Object.keys(listing).forEach((s) => { update[s] = listing[s].every(granted) ? 'granted' : 'denied'; });
    gtag('consent', 'update', update);

    document.querySelectorAll('script[type="text/plain"][data-category]').forEach((old) => {
      const need = old.getAttribute('data-category').split(/\s+/).filter(Boolean);
      if (ran.has(old) || !need.length || !need.every(granted)) return;
      ran.add(old);
      const s = document.createElement('script');
      for (const a of old.attributes) if (a.name !== 'type' && a.name !== 'data-category') s.setAttribute(a.name, a.value);
      if (old.dataset.type) s.type = old.dataset.type;
      if (old.nonce) s.nonce = old.nonce; // the nonce attribute reads empty once parsed
      if (old.src && !old.async) s.async = false; // external scripts keep the page's order
      s.text = old.text;
      old.replaceWith(s);
    });
    document.dispatchEvent(new CustomEvent('consentd:change', { detail: { choices: Object.assign({}, applied) } }));
  }

  // --- the dialog: '&' below is the dialog's id, so every rule stays inside it ---
  const CSS = `&{position:fixed;z-index:2147483000;left:16px;right:16px;bottom:16px;margin:0 auto;max-width:44rem;
max-height:calc(100vh - 32px);overflow:auto;padding:20px 24px;background:#fff;color:#1f2328;text-align:left;
border:1px solid #d0d7de;border-radius:12px;box-shadow:0 12px 32px rgba(0,0,0,.22);
font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,Arial,sans-serif}
&[hidden],& [hidden]{display:none!important}
& *{box-sizing:border-box;margin:0;font:inherit;color:inherit;letter-spacing:normal;text-transform:none}
& h2{font-size:18px;font-weight:650;margin-bottom:6px}
& h2:focus{outline:none}
& p{margin-bottom:12px}
& a{color:#0a58ca;text-decoration:underline}
& .consentd-list{border-top:1px solid #d0d7de;margin-bottom:12px}
& .consentd-cat{display:flex;gap:16px;justify-content:space-between;padding:10px 0;border-bottom:1px solid #d0d7de}
& .consentd-cat p{margin:2px 0 0;font-size:13px;color:#57606a}
& label,& .consentd-name{font-weight:600}
& .consentd-on{flex:none;font-size:13px;font-weight:600;color:#1a7f37}
& input{appearance:none;-webkit-appearance:none;flex:none;width:44px;height:24px;margin-top:2px;border-radius:12px;
cursor:pointer;background:#6e7781 radial-gradient(circle,#fff 8px,transparent 9px) no-repeat left center/24px 24px;
transition:background .15s}
& input:checked{background-color:#1a7f37;background-position:right center}
& .consentd-note{font-size:13px;padding:8px 10px;background:#f6f8fa;border-radius:6px}
& [role=alert]{color:#b42318;font-weight:600}
& [role=alert]:empty{display:none}
& .consentd-actions{display:grid;grid-template-columns:repeat(auto-fit,minmax(9.5rem,1fr));gap:8px}
& button{display:block;width:100%;min-height:44px;padding:10px 16px;border:2px solid #1f2328;border-radius:8px;
background:#1f2328;color:#fff;font-weight:600;text-align:center;cursor:pointer}
& button:hover{background:#3d444d}
& .consentd-alt,& .consentd-alt:hover{background:#fff;color:#1f2328}
& :focus-visible{outline:3px solid #0a58ca;outline-offset:2px}
@media (forced-colors:active){& input{appearance:auto;-webkit-appearance:auto}}`.replace(/&/g, '#consentd-banner');

  function el(name, attrs, children) {
    const node = document.createElement(name);
    for (const k in attrs) node.setAttribute(k, attrs[k]);
    node.append(...[].concat(children || [])); // strings become text, never HTML
    return node;
  }
  const button = (action, label, cls) => el('button', { type: 'button', class: cls || 'consentd-btn', 'data-consentd-action': action }, label);
  const httpUrl = (u) => { try { const x = new URL(u, location.href); return /^https?:$/.test(x.protocol) && x.href; } catch (e) { return false; } };

  function build() {
    const style = el('style', { id: 'consentd-style' }, CSS);
    if (tag.nonce) style.nonce = tag.nonce;
    document.head.append(style);

    const desc = el('p', { id: 'consentd-desc' }, text('description'));
    const policy = config.privacy_policy_url && httpUrl(config.privacy_policy_url);
    if (policy) desc.append(' ', el('a', { href: policy, target: '_blank', rel: 'noopener' }, text('privacy_link')));
    const row = (name, about, control) => el('div', { class: 'consentd-cat' }, [el('div', {}, [name, about]), control]);
    const inputs = config.categories.map((c, i) => el('input', {
      type: 'checkbox', role: 'switch', id: 'consentd-cat-' + i,
      'data-consentd-category': c.key, 'aria-describedby': 'consentd-cat-' + i + '-desc',
    }));
    const list = el('div', { class: 'consentd-list' }, [row(
      el('span', { class: 'consentd-name' }, text('necessary_title')),
      el('p', {}, text('necessary_description')),
      el('span', { class: 'consentd-on' }, text('always_on')),
    )].concat(config.categories.map((c, i) => row(
      el('label', { for: inputs[i].id }, c.title || c.key),
      el('p', { id: inputs[i].id + '-desc' }, c.description || ''),
      inputs[i],
    ))));
    const gpcNote = GPC && config.categories.some((c) => c.gpc) ? el('p', { class: 'consentd-note' }, text('gpc_note')) : '';
    const manageView = el('div', { hidden: '' }, [list, gpcNote]);
    const error = el('p', { role: 'alert' });
    const manage = button('manage', text('manage'), 'consentd-alt');
    const save = button('save', text('save'));
    save.hidden = true;

    const title = el('h2', { id: 'consentd-title', tabindex: '-1' }, text('title'));
    const box = el('div', {
      id: 'consentd-banner', role: 'dialog', 'aria-modal': 'false',
      'aria-labelledby': 'consentd-title', 'aria-describedby': 'consentd-desc', hidden: '',
    }, [
      title, desc, manageView, error,
      el('div', { class: 'consentd-actions' }, [
        button('accept_all', text('accept_all')), button('reject_all', text('reject_all')), manage, save,
      ]),
    ]);
    box.addEventListener('click', (e) => {
      const b = e.target.closest('[data-consentd-action]');
      const action = b && b.getAttribute('data-consentd-action');
      if (action === 'manage') view(true);
      else if (action === 'accept_all') choose(every(() => true));
      else if (action === 'reject_all') choose(every(() => false));
      else if (action === 'save') choose(every((k) => inputs[keys().indexOf(k)].checked));
    });
    // Escape leaves the detailed view; it never dismisses the banner without a choice.
    box.addEventListener('keydown', (e) => {
      if (e.key === 'Escape' && !manageView.hidden) { e.preventDefault(); e.stopPropagation(); view(false); }
    });
    document.body.append(box);
    ui = { box, title, manageView, error, manage, save, inputs };
  }

  function view(manage) {
    ui.manageView.hidden = ui.save.hidden = !manage;
    ui.manage.hidden = manage;
    (manage ? ui.inputs[0] || ui.save : ui.manage).focus();
  }

  // prompt: shown because no valid choice stands; then GPC categories start unticked and the others
  // show only a standing grant. Reopened by the visitor, the switches show the choices in force.
  function show(manage, prompt) {
    if (!config) { wantOpen = true; return; }
    if (!ui) build();
    const from = (!prompt && applied) || standing;
    config.categories.forEach((c, i) => { ui.inputs[i].checked = from[c.key] === true && !(prompt && GPC && c.gpc); });
    ui.error.textContent = '';
    if (ui.box.hidden) {
      lastFocus = document.activeElement;
      ui.box.hidden = false;
    }
    view(manage);
    if (!manage) ui.title.focus(); // the heading, not a button: no choice is nudged
  }

  function hide() {
    ui.box.hidden = true;
    const back = lastFocus;
    lastFocus = null;
    if (back && back !== document.body && back.isConnected && back.focus) back.focus();
  }

  function post(choices) {
    // No device_id on a first choice: the answer carries the one consentd issues.
    const body = JSON.stringify(Object.assign(device ? { device_id: device } : {}, {
      choices, policy_version: config.policy_version, page_url: location.origin + location.pathname,
    }));
    if (!pending || pending.body !== body) pending = { body, key: randomId() };
    return fetch(endpoint('/v1/public/cookie-consents'), {
      method: 'POST', mode: 'cors', credentials: 'omit', body,
      headers: { 'Content-Type': 'application/json', 'Idempotency-Key': pending.key },
    });
  }

  async function choose(choices) {
    if (busy) return;
    busy = true;
    ui.error.textContent = '';
    try {
      let r = await post(choices);
      if (device && await refusesDevice(r)) { remember(null); r = await post(choices); } // then ask for a new one
      if (!r.ok) throw new Error('HTTP ' + r.status);
      const answer = await r.json();
      if (answer.device_id) remember(answer.device_id);
      standing = answer.choices || {};
      pending = null;
      hide();
      apply(standing);
    } catch (e) {
      ui.error.textContent = text('error'); // the banner stays open and nothing is applied
    } finally {
      busy = false;
    }
  }

  // Reopen: any [data-consentd-settings], or a link to #cookie-settings.
  document.addEventListener('click', (e) => {
    if (!e.target.closest || !e.target.closest('[data-consentd-settings],a[href$="#cookie-settings"]')) return;
    e.preventDefault();
    show(true, false);
  });

  window.consentd = {
    open: () => show(true, false),
    choices: () => applied && Object.assign({}, applied),
    deviceId: () => device,
  };

  const domReady = new Promise((done) => {
    if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', done, { once: true });
    else done();
  });

  // Failures: without the configuration nothing is shown and no gated script runs (fail closed;
  // Consent Mode stays denied). If only this device's choice cannot be read, the banner is shown.
  // No device id yet: nothing to read, the banner asks. A refused one is forgotten and the banner asks again.
  Promise.all([
    getJSON('/v1/public/banner'),
    device && getJSON('/v1/public/cookie-consents/' + encodeURIComponent(device), () => remember(null)).catch(() => null),
  ]).then(async ([cfg, mine]) => {
    await domReady;
    config = cfg;
    if (!Array.isArray(cfg.categories)) cfg.categories = [];
    standing = (mine && mine.choices) || {};
    if (mine && mine.reprompt === false) {
      apply(standing);
      if (wantOpen) show(true, false);
    } else {
      show(wantOpen, true);
    }
  }).catch((e) => console.warn('consentd: banner unavailable', e));
})();
