// PCM between the offscreen document (which can capture a tab) and the service worker
// (which runs the kit's live captions). Extension messages are JSON, so frames travel as
// base64 of their 16-bit samples.

export const AUDIO_PORT = 'reference-extension-audio';

export function pcmToBase64(samples) {
  const bytes = new Uint8Array(samples.buffer, samples.byteOffset, samples.byteLength);
  let binary = '';
  for (let i = 0; i < bytes.length; i += 0x8000) binary += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(binary);
}

export function base64ToPcm(text) {
  const binary = atob(text);
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i += 1) bytes[i] = binary.charCodeAt(i);
  return new Int16Array(bytes.buffer);
}
