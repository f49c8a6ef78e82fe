// The API this extension talks to. Point it at your deployment
// (https://<api id>.execute-api.<region>.amazonaws.com/api) and add the same origin to
// "host_permissions" in manifest.json. The default is `make run` on this machine.
export const API_URL = 'http://127.0.0.1:8000';
