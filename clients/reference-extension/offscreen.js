// The offscreen document: the only place an MV3 extension can turn a tab-capture stream id
// into audio. It hands 16-bit PCM to the service worker and keeps the tab audible.
import { mediaStreamSource } from './kit/kit.js';
import { AUDIO_PORT, pcmToBase64 } from './audio-port.js';

const port = chrome.runtime.connect({ name: AUDIO_PORT });
let stream = null;
let source = null;

port.onMessage.addListener(async (message) => {
  if (message.type === 'capture') {
    try {
      stream = await navigator.mediaDevices.getUserMedia({
        audio: { mandatory: { chromeMediaSource: 'tab', chromeMediaSourceId: message.streamId } },
      });
      source = mediaStreamSource(stream, { playThrough: true }); // tab capture mutes the tab otherwise
      await source.start((pcm) => port.postMessage({ type: 'pcm', data: pcmToBase64(pcm) }));
      port.postMessage({ type: 'ready', sampleRate: source.sampleRate });
    } catch (error) {
      port.postMessage({ type: 'failed', message: String(error?.message || error) });
    }
  } else if (message.type === 'stop') {
    await source?.stop();
    for (const track of stream?.getTracks() || []) track.stop();
    window.close();
  }
});
