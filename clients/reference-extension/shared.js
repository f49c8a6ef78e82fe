// What the popup and the service worker share: the kit, created once per context over
// the same chrome.storage, so a sign-in or a balance seen in one shows in the other.
import { createKit } from './kit/kit.js';
import { API_URL } from './config.js';

export const kit = createKit({ baseUrl: API_URL });

/** What the service worker shows about live captions (chrome.storage.session, read by the popup). */
export const LIVE_STATE = 'referenceExtension.live';
