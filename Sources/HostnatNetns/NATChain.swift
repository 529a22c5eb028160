public import HostnatAddressing
public import HostnatDataplane
internal import HostnatEngine
public import HostnatPackets

/// An Internet with no emulated servers: with an uplink set, everything the edge does not route
/// to a host goes up it.
public final class NoInternetServers: PacketEndpoint {
  public init() {}
  public func receive(_ packet: UnsafeRawBufferPointer, now: UInt64, emit: (UnsafeRawBufferPointer) -> Void) {}
  public func tick(now: UInt64, emit: (UnsafeRawBufferPointer) -> Void) {}
}

/// Where a `NATChain` puts its pieces.
public struct NATChainLayout: Sendable {
  public var vmNamespace: String
  public var internetNamespace: String
  public var vmAddress: IPv4Address
  public var natIP: IPv4Address
  public var natPorts: Range<Int>
  /// The Internet namespace's own address (a /24 on its device).
  public var internetAddress: IPv4Address
  /// Further /32s in the Internet namespace, for servers.
  public var serverAddresses: [IPv4Address]
  public var flowCapacity: Int
  public var batchSize: Int

  public init(
    vmNamespace: String, internetNamespace: String, vmAddress: IPv4Address, natIP: IPv4Address, natPorts: Range<Int>,
    internetAddress: IPv4Address, serverAddresses: [IPv4Address], flowCapacity: Int = 4096, batchSize: Int = 64
  ) {
    self.vmNamespace = vmNamespace
    self.internetNamespace = internetNamespace
    self.vmAddress = vmAddress
    self.natIP = natIP
    self.natPorts = natPorts
    self.internetAddress = internetAddress
    self.serverAddresses = serverAddresses
    self.flowCapacity = flowCapacity
    self.batchSize = batchSize
  }
}

/// The whole hostnat path in one process: a VM namespace bridged to a host agent that NATs the
/// VM's address to one NAT IP's port block, an edge routing that block back, and an Internet
/// namespace as the edge's uplink. The agent and edge are the data planes `hostnat agent` and
/// `hostnat edge` run. Used by `DataplaneBench` and the namespace tests.
public final class NATChain {
  public let agentSocket: UDPSocket
  public let edgeSocket: UDPSocket
  public let agent: AgentDataplane
  public let edge: EdgeDataplane<NoInternetServers>
  public let vm: BridgedNamespace
  public let inet: BridgedNamespace
  private var removed = false

  /// Builds and starts every piece; a failure halfway removes what was made.
  public init(_ layout: NATChainLayout) throws(NetnsError) {
    let loopback = SocketAddress(ip: IPv4Address(127, 0, 0, 1), port: 0)
    let made = CleanupStack()
    do throws(NetnsError) {
      do {
        agentSocket = try UDPSocket(binding: loopback)
        edgeSocket = try UDPSocket(binding: loopback)
      } catch {
        throw NetnsError(.systemCall, error.description, errno: error.code)
      }
      let agentSocket = agentSocket
      let edgeSocket = edgeSocket
      made.push {
        agentSocket.close()
        edgeSocket.close()
      }
      let config = EngineConfig(vms: [
        VMConfig(
          id: "vm", primaryIP: layout.vmAddress, natSourceRanges: [IPv4CIDR(layout.vmAddress, prefixLength: 32)!],
          portBlocks: [PortBlock(natIP: layout.natIP, ports: layout.natPorts)])
      ])
      do {
        agent = try AgentDataplane(
          socket: agentSocket, capacity: layout.flowCapacity, initialConfig: config, initialVersion: 1, batchSize: layout.batchSize)
        edge = EdgeDataplane(socket: edgeSocket, servers: NoInternetServers(), batchSize: layout.batchSize)
        try edge.setRoutes([
          EdgeRoute(
            natIP: layout.natIP, firstPort: UInt16(layout.natPorts.lowerBound), count: layout.natPorts.count,
            host: agentSocket.localAddress)
        ])
      } catch {
        throw NetnsError(.unsupported, "agent or edge: \(error)")
      }
      agent.setEdge(edgeSocket.localAddress)
      inet = try BridgedNamespace.internet(
        namespace: layout.internetNamespace, address: layout.internetAddress, prefixLength: 24,
        serverAddresses: layout.serverAddresses, edge: edgeSocket.localAddress)
      let inet = inet
      made.push { try? inet.shutdown() }
      vm = try BridgedNamespace.vm(
        namespace: layout.vmNamespace, address: layout.vmAddress, prefixLength: 24, agent: agentSocket.localAddress)
    } catch {
      made.run()
      throw error
    }
    edge.setUplink(inet.underlayAddress)
    agent.start()
    edge.start()
    inet.start()
    vm.start()
  }

  /// Stops every loop, removes both namespaces and closes the sockets (idempotent). Returns what
  /// could not be removed.
  @discardableResult
  public func shutdown() -> [String] {
    guard !removed else { return [] }
    removed = true
    vm.bridge.stop()
    inet.bridge.stop()
    agent.stop()
    edge.stop()
    var left: [String] = []
    for side in [vm, inet] {
      do { try side.shutdown() } catch { left.append("\(side.namespace): \(error)") }
    }
    agentSocket.close()
    edgeSocket.close()
    return left
  }
}
