public import HostnatAddressing
import Foundation
public import HostnatContracts
import HostnatControlRules
public import HostnatDataplane
import HostnatEngine
import HostnatPackets
public import HostnatProto
import HostnatTelemetry
public import HostnatTrace
import Logging
public import ServiceLifecycle
import SwiftProtobuf
import Synchronization

/// How to start a host agent (`hostnat agent`).
public struct AgentOptions: Sendable {
  public var hostID: String
  public var controller: String
  public var underlay: SocketAddress
  public var stateDir: String
  /// Where Internet-bound packets go: the edge's underlay address (the host's uplink).
  public var edge: SocketAddress?
  /// Flow table capacity; the table lives in a file in the state dir so a restart keeps flows.
  public var flowCapacity: Int = 262_144
  /// Where to serve Prometheus metrics (`/metrics`, `/healthz`); nil: not served.
  public var metrics: SocketAddress?
  public var timing = ControlTiming()
  /// Where every control message is recorded (`--trace-control`), if anywhere.
  public var trace: ControlTrace?

  public init(hostID: String, controller: String, underlay: SocketAddress, stateDir: String, edge: SocketAddress?) {
    self.hostID = hostID
    self.controller = controller
    self.underlay = underlay
    self.stateDir = stateDir
    self.edge = edge
  }
}

/// The agent's side of dynamic port allocation, between ticks.
struct DemandState {
  var requests = 0
  var grants = 0
  var lastRefusal: String?
  /// NIC → when a request for it was last sent (ms), so one slow answer is not asked for twice.
  var pending: [String: Int64] = [:]
  /// VM → allocation failures counted at the last tick.
  var failures: [String: UInt64] = [:]
  var lastReportMs: Int64 = 0
}

/// A host agent: the translation data plane for the VMs on one host, fed by the controller over
/// one control stream, and able to run on its last good config when the controller is gone.
/// A service whose children are the packet loop, the metrics endpoint, the control stream and
/// the once-a-second tick.
public final class HostAgent: Service, Sendable {
  public let options: AgentOptions
  public let bootID: String
  public let link: ControlLink
  public let dataplane: AgentDataplane
  public let flowTableAttached: Bool
  /// The applied snapshot and its file.
  let applied: AppliedSnapshot<Hostnat_V1_HostConfig>
  let telemetry: AgentTelemetry
  let metricsPort = Mutex<Int?>(nil)
  let demand = Mutex(DemandState())
  /// Lease-mode fencing (control.proto rule 8).
  let fence = Mutex(LeaseFence.normal)
  /// When the controller was last heard before this process started (from the last status
  /// file), so a restart does not reset the lease.
  let heardBeforeStartMs: Int64
  let logger: Logger

  public init(options: AgentOptions) throws {
    self.options = options
    self.bootID = UUID().uuidString.lowercased()
    self.link = try ControlLink(controller: options.controller, timing: options.timing)
    try FileManager.default.createDirectory(atPath: options.stateDir, withIntermediateDirectories: true)
    let configFile = StateFile<Hostnat_V1_HostConfig>(path: options.stateDir + "/config.pb")
    let saved = try configFile.load()
    var initial = EngineConfig()
    if let saved {
      do {
        initial = try ConfigTranslation.engineConfig(saved)
      } catch {
        throw StateFileError(path: configFile.path, reason: "saved config is not applicable: \(error)")
      }
    }
    let socket = try UDPSocket(binding: options.underlay)
    let (region, attached) = try FlowRegion.open(path: options.stateDir + "/flows.region", capacity: options.flowCapacity)
    self.flowTableAttached = attached
    dataplane = try AgentDataplane(socket: socket, capacity: options.flowCapacity, flowRegion: region, initialConfig: saved == nil ? nil : initial, initialVersion: saved?.version ?? 0)
    dataplane.setEdge(options.edge)
    dataplane.enableLog(capacity: 65_536)
    telemetry = try AgentTelemetry(stateDir: options.stateDir, hostID: options.hostID)
    if let saved { telemetry.setContext(saved) }
    applied = AppliedSnapshot(file: configFile, loaded: saved, link: link) { $0.token }
    heardBeforeStartMs = StatusFile.read(AgentStatus.self, from: options.stateDir + "/status.json")?.control.lastMessageMs ?? 0
    var logger = Logger(label: "hostnat.agent")
    logger.logLevel = .notice
    self.logger = logger
  }

  /// The address the data plane listens on (port 0 in options resolves here).
  public var underlayAddress: SocketAddress { dataplane.socket.localAddress }

  /// Starts the data plane, then keeps the control stream up and the status file fresh until
  /// graceful shutdown; then stops the data plane and writes the last status. The data plane runs
  /// on its own thread and never waits for anything here.
  public func run() async throws {
    let control = ControlStreamClient<HostControl>(
      link: link, trace: options.trace,
      hello: { self.hello() },
      handle: { self.handle($0) })
    try await runNodeServices(
      logger: logger, packetLoop: PacketLoopService(start: { self.dataplane.start() }, stop: { self.dataplane.stop() }),
      metrics: MetricsEndpoint(name: "agent \(options.hostID)", server: telemetry.server, address: options.metrics) { port in
        self.metricsPort.withLock { $0 = port }
      },
      control: control, tick: { self.tick(control) })
    stop()
  }

  /// Once a second, off the packet path: one snapshot of the data plane and its port usage feeds
  /// the NAT log, the metrics, dynamic port allocation and the status file.
  func tick(_ control: ControlStreamClient<HostControl>) {
    let stats = dataplane.stats()
    let config = applied.value
    enforceLease(config, now: nowMs())
    let usage = config.map { PortDemand.all($0, flows: dataplane.flows()) } ?? []
    telemetry.tick(stats: stats, usage: usage, log: dataplane.drainLog(), link: link.status)
    askForPorts(usage.filter(\.dynamic), stats: stats, config: config, control: control)
    writeStatus(stats)
  }

  /// Stops the data plane (the flow table file stays for the next start).
  public func stop() {
    dataplane.stop()
    telemetry.log.write(dataplane.drainLog(), now: DataplaneClock.now())
    telemetry.log.close(now: DataplaneClock.now())
    writeStatus()
  }

  public var status: AgentStatus { status(dataplane.stats()) }

  func status(_ stats: AgentDataplaneStats) -> AgentStatus {
    AgentStatus(
      hostID: options.hostID, pid: getpid(), bootID: bootID, underlay: underlayAddress.description,
      flowTableAttached: flowTableAttached, control: link.status, dataplane: stats,
      metrics: metricsPort.withLock { $0 }.map { "\(options.metrics?.ip.description ?? "127.0.0.1"):\($0)" } ?? "",
      logWritten: telemetry.log.counts.written, logSkipped: telemetry.log.counts.skipped,
      portRequests: demand.withLock { $0.requests }, portGrants: demand.withLock { $0.grants },
      lastPortRefusal: demand.withLock { $0.lastRefusal }, ports: telemetry.ports.withLock { $0 }, writtenMs: nowMs())
  }

  func writeStatus(_ stats: AgentDataplaneStats? = nil) {
    StatusFile.write(status(stats ?? dataplane.stats()), to: options.stateDir + "/status.json")
  }

  /// Applies one pushed snapshot (rules 1–3 of control.proto) and returns the answer to send.
  public func handlePush(_ push: Hostnat_V1_ConfigPush) -> Hostnat_V1_AgentMessage {
    let config = push.config
    let held = applied.version
    let answer: AppliedSnapshot<Hostnat_V1_HostConfig>.Answer
    if config.hostID != options.hostID {
      let reason = "hostId: snapshot is for \(config.hostID.debugDescription), this host is \(options.hostID.debugDescription)"
      link.update { $0.nacks += 1; $0.lastNack = reason }
      answer = .nack(reason)
    } else {
      answer = applied.offer(config) { config in
        try dataplane.apply(try ConfigTranslation.engineConfig(config), version: config.version)
        telemetry.setContext(config)
        liftFence()
      } restore: { previous in
        if let previous, let engineConfig = try? ConfigTranslation.engineConfig(previous) {
          try? dataplane.apply(engineConfig, version: held)
          telemetry.setContext(previous)
        }
      } reinstate: { current in
        // The controller answered our hello with what we hold: a fenced host takes it up again.
        guard fence.withLock({ $0 }) != .normal, let engineConfig = try? ConfigTranslation.engineConfig(current) else { return }
        try? dataplane.apply(engineConfig, version: current.version)
        liftFence()
      }
    }
    return HostControl.answer(answer, nonce: push.nonce, offered: config.token, held: held)
  }

  /// Dynamic port allocation, once a second: asks for a block for each NIC near full (or that
  /// failed to allocate), and every 5 s reports usage so the controller can reclaim idle blocks.
  /// Without a controller nothing is sent: the VM stays capped at what it has.
  func askForPorts(
    _ usages: [PortDemand.Usage], stats: AgentDataplaneStats, config: Hostnat_V1_HostConfig?, control: ControlStreamClient<HostControl>
  ) {
    guard let config, !usages.isEmpty, control.isOpen else { return }
    let now = nowMs()
    var messages: [Hostnat_V1_AgentMessage] = []
    demand.withLock { d in
      for usage in usages {
        let failures = stats.vms[usage.vmID].map { ($0.drops["outOfResources"] ?? 0) + ($0.drops["endpointIndependenceConflict"] ?? 0) } ?? 0
        let grew = failures > (d.failures[usage.vmID] ?? 0)
        d.failures[usage.vmID] = failures
        let key = "\(usage.instance)/\(usage.nic)"
        guard PortDemand.needsMore(usage, allocationFailuresGrew: grew), now - (d.pending[key] ?? 0) > 2000 else { continue }
        d.pending[key] = now
        d.requests += 1
        messages.append(.with {
          $0.portRequest = .with {
            $0.requestID = "\(options.hostID)-\(now)-\(d.requests)"
            $0.instance = usage.instance
            $0.nic = usage.nic
            $0.portsAllocated = UInt32(usage.allocated)
          }
        })
      }
      if now - d.lastReportMs >= 5000 {
        d.lastReportMs = now
        messages.append(.with {
          $0.usage = PortDemand.report(usages, appliedVersion: config.version)
          $0.usage.appliedEpoch = config.epoch
        })
      }
    }
    for message in messages { control.send(message) }
  }

  func handleGrant(_ grant: Hostnat_V1_PortGrant) {
    demand.withLock { d in
      if grant.refusedReason.isEmpty {
        d.grants += 1
      } else {
        d.lastRefusal = grant.refusedReason
      }
    }
  }

  /// A message from the controller; the answer to send back, if any.
  func handle(_ message: Hostnat_V1_ControllerMessage) -> Hostnat_V1_AgentMessage? {
    switch message.message {
    case .push(let push)?: return handlePush(push)
    case .portGrant(let grant)?:
      handleGrant(grant)
      return nil
    default: return nil
    }
  }
}

/// Where a lease-mode host stands (control.proto rule 8).
enum LeaseFence: String, Sendable {
  /// The controller was heard within the lease minus the margin.
  case normal = ""
  /// Silent for longer than the lease minus the margin: every block is held drained (flows go
  /// on, no new mapping).
  case noNewMappings = "no-new-mappings"
  /// Silent for the whole lease: every flow has ended and no block is used; the controller may
  /// have given them to another host.
  case fenced
}

extension HostAgent {
  /// The hello for a new stream: the token and blocks held now, and whether they are fenced.
  public func hello() -> Hostnat_V1_AgentMessage {
    let fenced = fence.withLock { $0 } == .fenced
    let blocks = applied.value.map { Inventory.blocks(of: $0, fenced: fenced) } ?? []
    return HostControl.hello(
      nodeID: options.hostID, bootID: bootID, applied: applied.token, underlay: underlayAddress.description, blocks: blocks,
      fenced: fenced)
  }

  /// Lease mode, once a tick: measures the controller's silence from its last message (or, right
  /// after a restart, from the last one the previous process heard) and fences. The host and the
  /// controller measure the same lease on their own clocks; the margin absorbs their rate
  /// difference (assumed below margin/lease, e.g. 2 s in 60 s: 3 %, far above real clock drift).
  /// A fence is only lifted by a push from the controller (its answer to our hello), never by
  /// a heartbeat: after a fence the controller may have given our blocks to another host.
  public func enforceLease(_ config: Hostnat_V1_HostConfig?, now: Int64) {
    guard let config, config.fencingMode == .lease, config.ownershipLeaseSec > 0 else { return }
    let heard = max(link.status.lastMessageMs, heardBeforeStartMs)
    let silentMs = now - heard
    let leaseMs = Int64(config.ownershipLeaseSec) * 1000
    let stopMs = leaseMs - Int64(min(config.fenceMarginSec, config.ownershipLeaseSec)) * 1000
    let wanted: LeaseFence = silentMs >= leaseMs ? .fenced : silentMs >= stopMs ? .noNewMappings : .normal
    let current = fence.withLock { $0 }
    // Only ever tighter here; lifting is the push's (see above).
    guard wanted != .normal, wanted != current, current != .fenced else { return }
    var fenced = config
    for v in fenced.vms.indices {
      for n in fenced.vms[v].nics.indices {
        for b in fenced.vms[v].nics[n].natBindings.indices {
          if wanted == .fenced {
            fenced.vms[v].nics[n].natBindings[b].portBlocks = []
          } else {
            for p in fenced.vms[v].nics[n].natBindings[b].portBlocks.indices { fenced.vms[v].nics[n].natBindings[b].portBlocks[p].drained = true }
          }
        }
      }
    }
    do {
      try dataplane.apply(try ConfigTranslation.engineConfig(fenced), version: config.version)
      fence.withLock { $0 = wanted }
      link.update { $0.fencing = wanted.rawValue }
      logger.warning(
        "lease fencing", metadata: ["state": "\(wanted.rawValue)", "silentMs": "\(silentMs)", "leaseSec": "\(config.ownershipLeaseSec)"])
    } catch {
      logger.error("lease fencing failed", metadata: ["error": "\(error)"])
    }
  }

  func liftFence() {
    fence.withLock { $0 = .normal }
    link.update { $0.fencing = "" }
  }
}
