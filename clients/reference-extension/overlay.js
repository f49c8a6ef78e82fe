// In-page caption overlay, injected into the captioned tab by the service worker. It only
// draws what the worker sends: the last final line and the turn being spoken.
(() => {
  if (window.referenceCaptionOverlay) return;
  const box = document.createElement('div');
  box.id = 'reference-caption-overlay';
  box.setAttribute('role', 'status');
  box.hidden = true;
  const finalLine = document.createElement('div');
  const partialLine = document.createElement('div');
  partialLine.className = 'partial';
  box.append(finalLine, partialLine);
  document.documentElement.append(box);
  window.referenceCaptionOverlay = box;

  chrome.runtime.onMessage.addListener((message) => {
    if (message.type === 'overlay.caption') {
      box.hidden = false;
      if (message.final) { finalLine.textContent = message.text; partialLine.textContent = ''; } else partialLine.textContent = message.text;
    } else if (message.type === 'overlay.hide') {
      box.hidden = true;
      finalLine.textContent = '';
      partialLine.textContent = '';
    }
  });
})();
