import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import HostnatContracts
import HostnatProto
import Synchronization
import SwiftProtobuf

/// Faults a control proxy applies, read from its faults file (written by `hostnat lab chaos`).
public struct ControlFaults: Codable, Sendable, Equatable {
  /// Cut the control channel: streams end at once and new ones are refused.
  public var partitioned = false
  /// Probability of dropping each control message (hello excepted).
  public var drop = 0.0
  /// Delay added to each control message, in ms (order is kept).
  public var delayMs = 0
  /// Probability of sending a message twice.
  public var duplicate = 0.0
  /// Until this time (Unix ms), every config pushed to the host is made invalid on the way, as a
  /// controller bug would: the host must NACK it and keep its previous config.
  public var corruptPushesUntilMs: Int64 = 0

  public init() {}

  public static func load(_ path: String) -> ControlFaults {
    guard let data = FileManager.default.contents(atPath: path), let faults = try? JSONDecoder().decode(ControlFaults.self, from: data) else {
      return ControlFaults()
    }
    return faults
  }

  public func save(_ path: String) throws {
    try JSONEncoder().encode(self).write(to: URL(fileURLWithPath: path), options: .atomic)
  }
}

/// What a proxy counted, written to its status file.
public struct ControlProxyStatus: Codable, Sendable {
  public var faults: ControlFaults
  public var streams = 0
  public var refused = 0
  public var forwarded = 0
  public var dropped = 0
  public var duplicated = 0
  public var corrupted = 0
}

/// An in-path proxy on one host's (or the edge's) control connection: it forwards the control
/// streams to the controller message by message, so it can cut the channel while the data path
/// stays up, or drop, delay and duplicate individual pushes and ACKs.
public final class ControlProxy: Sendable {
  let faultsPath: String
  let statusPath: String
  let state: Mutex<ControlProxyStatus>

  public init(faultsPath: String, statusPath: String) {
    self.faultsPath = faultsPath
    self.statusPath = statusPath
    state = Mutex(ControlProxyStatus(faults: ControlFaults.load(faultsPath)))
  }

  var faults: ControlFaults { state.withLock { $0.faults } }

  /// Re-reads the faults file and writes the status, until cancelled.
  func watch() async {
    while !Task.isCancelled {
      let faults = ControlFaults.load(faultsPath)
      let status = state.withLock { s in s.faults = faults; return s }
      StatusFile.write(status, to: statusPath)
      try? await Task.sleep(for: .milliseconds(100))
    }
  }

  /// Sends `message` through the faults: maybe dropped, delayed, or sent twice.
  func forward<M: Sendable>(_ message: M, first: Bool, _ send: (M) async throws -> Void) async throws {
    let f = faults
    if f.partitioned { throw RPCError(code: .unavailable, message: "control channel partitioned by hostnat lab chaos") }
    if !first, f.drop > 0, Double.random(in: 0..<1) < f.drop {
      state.withLock { $0.dropped += 1 }
      return
    }
    if f.delayMs > 0 { try await Task.sleep(for: .milliseconds(f.delayMs)) }
    try await send(message)
    state.withLock { $0.forwarded += 1 }
    if !first, f.duplicate > 0, Double.random(in: 0..<1) < f.duplicate {
      try await send(message)
      state.withLock { $0.duplicated += 1 }
    }
  }

  /// Pipes one stream both ways; ends when either side ends or the channel is partitioned.
  func pipe<Up: Sendable, Down: Sendable>(
    request: RPCAsyncSequence<Up, any Error>, response: RPCWriter<Down>,
    corrupt: @escaping @Sendable (Down) -> Down? = { _ in nil },
    upstream: (@escaping @Sendable (RPCWriter<Up>) async throws -> Void, @escaping @Sendable (StreamingClientResponse<Down>) async throws -> Void) async throws -> Void
  ) async throws {
    if faults.partitioned {
      state.withLock { $0.refused += 1 }
      throw RPCError(code: .unavailable, message: "control channel partitioned by hostnat lab chaos")
    }
    state.withLock { $0.streams += 1 }
    try await upstream({ writer in
      var first = true
      for try await message in request {
        try await self.forward(message, first: first) { try await writer.write($0) }
        first = false
      }
    }, { upResponse in
      try await withThrowingTaskGroup(of: Void.self) { group in
        group.addTask {
          for try await message in upResponse.messages {
            var message = message
            if self.faults.corruptPushesUntilMs > nowMs(), let corrupted = corrupt(message) {
              message = corrupted
              self.state.withLock { $0.corrupted += 1 }
            }
            try await self.forward(message, first: false) { try await response.write($0) }
          }
        }
        group.addTask {
          while true {
            try await Task.sleep(for: .milliseconds(100))
            if self.faults.partitioned { throw RPCError(code: .unavailable, message: "control channel partitioned by hostnat lab chaos") }
          }
        }
        try await group.next()
        group.cancelAll()
      }
    })
  }

  /// Serves on `listen` and forwards to `upstream` until cancelled.
  public func run(listen: (String, Int), upstream: (String, Int), ready: @Sendable (Int) -> Void) async throws {
    let client = GRPCClient(transport: try HTTP2ClientTransport.Posix(target: .ipv4(address: upstream.0, port: upstream.1), transportSecurity: .plaintext))
    let server = GRPCServer(
      transport: HTTP2ServerTransport.Posix(address: .ipv4(host: listen.0, port: listen.1), transportSecurity: .plaintext),
      services: [HostPipe(proxy: self, client: client), EdgePipe(proxy: self, client: client)])
    try await withThrowingTaskGroup(of: Void.self) { group in
      group.addTask { try await client.runConnections() }
      group.addTask { try await server.serve() }
      group.addTask { await self.watch() }
      if let address = try await server.listeningAddress?.ipv4 { ready(address.port) }
      defer {
        server.beginGracefulShutdown()
        client.beginGracefulShutdown()
      }
      try await withTaskCancellationHandler {
        try await group.next()
      } onCancel: {
        server.beginGracefulShutdown()
        client.beginGracefulShutdown()
      }
      group.cancelAll()
    }
  }

  static var options: CallOptions {
    var o = CallOptions.defaults
    o.waitForReady = false
    return o
  }

  struct HostPipe: Hostnat_V1_HostControlService.SimpleServiceProtocol {
    let proxy: ControlProxy
    let client: GRPCClient<HTTP2ClientTransport.Posix>
    func connect(
      request: RPCAsyncSequence<Hostnat_V1_AgentMessage, any Error>, response: RPCWriter<Hostnat_V1_ControllerMessage>, context: ServerContext
    ) async throws {
      let upstream = Hostnat_V1_HostControlService.Client(wrapping: client)
      try await proxy.pipe(request: request, response: response, corrupt: Self.corrupt) { produce, consume in
        try await upstream.connect(options: ControlProxy.options, requestProducer: produce, onResponse: consume)
      }
    }

    /// A push with one VM whose primary IP is not an address: any agent must refuse the whole snapshot.
    static func corrupt(_ message: Hostnat_V1_ControllerMessage) -> Hostnat_V1_ControllerMessage? {
      guard case .push(var push)? = message.message else { return nil }
      push.config.vms.append(.with {
        $0.instance = "corrupted-by-lab-chaos"
        $0.nics = [.with { $0.name = "nic0"; $0.primaryIp = "10.999.0.1" }]
      })
      return .with { $0.push = push }
    }
  }

  struct EdgePipe: Hostnat_V1_EdgeControlService.SimpleServiceProtocol {
    let proxy: ControlProxy
    let client: GRPCClient<HTTP2ClientTransport.Posix>
    func connect(
      request: RPCAsyncSequence<Hostnat_V1_EdgeMessage, any Error>, response: RPCWriter<Hostnat_V1_EdgeControllerMessage>, context: ServerContext
    ) async throws {
      let upstream = Hostnat_V1_EdgeControlService.Client(wrapping: client)
      try await proxy.pipe(request: request, response: response) { produce, consume in
        try await upstream.connect(options: ControlProxy.options, requestProducer: produce, onResponse: consume)
      }
    }
  }
}
