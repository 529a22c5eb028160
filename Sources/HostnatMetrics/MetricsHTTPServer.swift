public import NIOCore
internal import NIOPosix
internal import NIOHTTP1
internal import Synchronization

/// Errors of the metrics server.
public enum MetricsHTTPServerError: Error, Sendable, Hashable {
  case alreadyStarted
  case noLocalPort
}

/// A minimal HTTP/1.1 server for Prometheus: `GET /metrics` (text exposition of the registry),
/// `GET /healthz` ("ok"), 404 for other paths, 405 for other methods. Requests are bounded: headers
/// by NIO's parser limit (80 KiB), bodies to `maxBodyBytes` (413 and close), idle connections
/// closed after `idleTimeout`.
public final class MetricsHTTPServer: Sendable {
  public let registry: TelemetryRegistry
  public let maxBodyBytes: Int
  public let idleTimeout: TimeAmount
  let group: any EventLoopGroup
  let onScrape: (@Sendable () -> Void)?
  let channel: Mutex<(any Channel)?> = Mutex(nil)

  /// `group` defaults to NIO's shared singleton group. `onScrape` runs before each `/metrics` answer (on an event loop; keep it short), so a
  /// process can refresh gauges from a snapshot only when someone looks.
  public init(
    registry: TelemetryRegistry, group: (any EventLoopGroup)? = nil,
    maxBodyBytes: Int = 4096, idleTimeout: TimeAmount = .seconds(30), onScrape: (@Sendable () -> Void)? = nil
  ) {
    self.registry = registry
    self.group = group ?? MultiThreadedEventLoopGroup.singleton
    self.maxBodyBytes = maxBodyBytes
    self.idleTimeout = idleTimeout
    self.onScrape = onScrape
  }

  /// Binds and starts serving; returns the bound port (useful with port 0).
  public func start(host: String = "127.0.0.1", port: Int) async throws -> Int {
    guard channel.withLock({ $0 == nil }) else { throw MetricsHTTPServerError.alreadyStarted }
    let registry = registry
    let maxBody = maxBodyBytes
    let idle = idleTimeout
    let onScrape = onScrape
    let ch = try await ServerBootstrap(group: group)
      .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
      .serverChannelOption(.backlog, value: 64)
      .childChannelInitializer { channel in
        channel.eventLoop.makeCompletedFuture {
          let ops = channel.pipeline.syncOperations
          try ops.addHandler(IdleStateHandler(readTimeout: idle))
          try ops.configureHTTPServerPipeline(withErrorHandling: true)
          try ops.addHandler(MetricsHTTPHandler(registry: registry, maxBodyBytes: maxBody, onScrape: onScrape))
        }
      }
      .bind(host: host, port: port).get()
    guard let bound = ch.localAddress?.port else {
      try? await ch.close()
      throw MetricsHTTPServerError.noLocalPort
    }
    let raced = channel.withLock { c -> Bool in
      if c != nil { return true }
      c = ch
      return false
    }
    if raced {
      try? await ch.close()
      throw MetricsHTTPServerError.alreadyStarted
    }
    return bound
  }

  /// Stops listening (open connections finish their request). The event loop group is not shut down.
  public func shutdown() async {
    guard let ch = channel.withLock({ c -> (any Channel)? in defer { c = nil }; return c }) else { return }
    try? await ch.close()
  }
}

final class MetricsHTTPHandler: ChannelInboundHandler {
  typealias InboundIn = HTTPServerRequestPart
  typealias OutboundOut = HTTPServerResponsePart

  let registry: TelemetryRegistry
  let maxBodyBytes: Int
  let onScrape: (@Sendable () -> Void)?
  var head: HTTPRequestHead?
  var bodyBytes = 0
  var rejected = false

  init(registry: TelemetryRegistry, maxBodyBytes: Int, onScrape: (@Sendable () -> Void)?) {
    self.registry = registry
    self.maxBodyBytes = maxBodyBytes
    self.onScrape = onScrape
  }

  func channelRead(context: ChannelHandlerContext, data: NIOAny) {
    switch unwrapInboundIn(data) {
    case .head(let h):
      head = h
      bodyBytes = 0
      rejected = false
    case .body(let b):
      bodyBytes += b.readableBytes
      if bodyBytes > maxBodyBytes, !rejected {
        rejected = true
        respond(context: context, status: .payloadTooLarge, contentType: "text/plain", body: Array("request too large\n".utf8), keepAlive: false)
      }
    case .end:
      guard let h = head, !rejected else { return }
      head = nil
      let path = h.uri.split(separator: "?", maxSplits: 1).first.map(String.init) ?? h.uri
      let keepAlive = h.isKeepAlive
      guard path == "/metrics" || path == "/healthz" else {
        respond(context: context, status: .notFound, contentType: "text/plain", body: Array("not found\n".utf8), keepAlive: keepAlive)
        return
      }
      guard h.method == .GET || h.method == .HEAD else {
        respond(context: context, status: .methodNotAllowed, contentType: "text/plain", body: Array("method not allowed\n".utf8), keepAlive: keepAlive, extra: [("Allow", "GET, HEAD")])
        return
      }
      let body: [UInt8]
      let type: String
      if path == "/metrics" {
        onScrape?()
        body = registry.renderBytes()
        type = "text/plain; version=0.0.4; charset=utf-8"
      } else {
        body = Array("ok\n".utf8)
        type = "text/plain"
      }
      respond(context: context, status: .ok, contentType: type, body: h.method == .HEAD ? [] : body, keepAlive: keepAlive, length: body.count)
    }
  }

  func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
    if event is IdleStateHandler.IdleStateEvent {
      context.close(promise: nil)
    } else {
      context.fireUserInboundEventTriggered(event)
    }
  }

  func respond(
    context: ChannelHandlerContext, status: HTTPResponseStatus, contentType: String, body: [UInt8], keepAlive: Bool,
    length: Int? = nil, extra: [(String, String)] = []
  ) {
    var headers = HTTPHeaders([("Content-Type", contentType), ("Content-Length", String(length ?? body.count))] + extra)
    headers.add(name: "Connection", value: keepAlive ? "keep-alive" : "close")
    context.write(wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: status, headers: headers))), promise: nil)
    if !body.isEmpty {
      context.write(wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(bytes: body)))), promise: nil)
    }
    let done = context.writeAndFlush(wrapOutboundOut(.end(nil)))
    if !keepAlive {
      let ctx = NIOLoopBound(context, eventLoop: context.eventLoop)
      done.whenComplete { _ in ctx.value.close(promise: nil) }
    }
  }
}
