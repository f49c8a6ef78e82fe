// AudioWorklet processor used by kit.js's mediaStreamSource(): mixes the input down to
// mono and converts it to 16-bit PCM, which is what AssemblyAI's streaming socket takes.
// It is a separate file because an extension's content security policy only lets an
// AudioWorklet load a module from the extension itself (not a blob: URL).
class TranscriptionKitPcm extends AudioWorkletProcessor {
  process(inputs) {
    const channels = inputs[0];
    if (channels && channels.length > 0 && channels[0].length > 0) {
      const frames = channels[0].length;
      const pcm = new Int16Array(frames);
      for (let i = 0; i < frames; i += 1) {
        let sample = 0;
        for (const channel of channels) sample += channel[i];
        sample /= channels.length;
        const clipped = Math.max(-1, Math.min(1, sample));
        pcm[i] = clipped < 0 ? clipped * 0x8000 : clipped * 0x7fff;
      }
      this.port.postMessage(pcm, [pcm.buffer]);
    }
    return true;
  }
}

registerProcessor('transcription-kit-pcm', TranscriptionKitPcm);
