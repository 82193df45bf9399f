// node:http for the bundles (the CLI's and the Lambda functions'), put in
// place of every `http` and `node:http` import by esbuild's alias option.
//
// Why: Node makes an ES module's view of a built-in by reading every one of
// its exports, and node:http's WebSocket, CloseEvent and MessageEvent are
// getters that load Node's own copy of undici. An `import ... from
// 'node:http'` therefore cost 43 ms on Node 22, against 7 ms for the module
// itself. This file takes the module without an ES module view and exports
// its names but those three; the default export is the module, getters
// intact. A name a dependency imports and this list lacks fails the build.
const http = process.getBuiltinModule('node:http');

export default http;
export const {
  _connectionListener,
  Agent,
  ClientRequest,
  createServer,
  get,
  globalAgent,
  IncomingMessage,
  METHODS,
  maxHeaderSize,
  OutgoingMessage,
  request,
  Server,
  ServerResponse,
  STATUS_CODES,
  setMaxIdleHTTPParsers,
  validateHeaderName,
  validateHeaderValue,
} = http;
