public import GRPCCore
public import HostnatProto
public import HostnatTrace

/// Serves the edge's control stream (proto: EdgeControlService): the routing snapshot from NAT
/// IP:port blocks to hosts, with the same version and ACK rules as host configs.
public struct EdgeControlService: Hostnat_V1_EdgeControlService.SimpleServiceProtocol {
  var stream: ControlStream<EdgeStreamKind>
  public var store: ControllerStore { stream.store }
  public var registry: SessionRegistry<Hostnat_V1_EdgeControllerMessage> { stream.registry }
  /// Where every control message is recorded (`--trace-control`), if anywhere.
  public var trace: ControlTrace? {
    get { stream.trace }
    set { stream.trace = newValue }
  }

  public init(
    store: ControllerStore,
    registry: SessionRegistry<Hostnat_V1_EdgeControllerMessage>,
    heartbeatInterval: Duration = .seconds(1),
    nowMs: @escaping MillisecondClock = systemMillisecondClock,
    prepare: (@Sendable (Hostnat_V1_Hello) async throws -> Void)? = nil
  ) {
    stream = ControlStream(store: store, registry: registry, heartbeatInterval: heartbeatInterval, nowMs: nowMs)
    // Its routes are the newest ownership map: the controller reconciles with them (rule 9).
    stream.prepare = prepare
  }

  public func connect(
    request: RPCAsyncSequence<Hostnat_V1_EdgeMessage, any Error>,
    response: RPCWriter<Hostnat_V1_EdgeControllerMessage>,
    context: ServerContext
  ) async throws {
    try await stream.run(request: request, response: response, remote: context.remotePeer)
  }
}
