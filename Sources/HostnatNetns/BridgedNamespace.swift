public import HostnatAddressing
public import HostnatDataplane
import HostnatPackets
internal import Synchronization

/// One namespace of namespaces mode with everything it needs: the namespace, a TUN device in it
/// (addressed, MTU set, up, routes), an underlay socket on 127.0.0.1 and the bridge between them.
/// `vm` and `internet` make the two kinds; `shutdown` takes everything down again (bridge, socket,
/// device, namespace) and is safe to call more than once.
///
/// Setting up a VM and the Internet side of a lab:
/// ```swift
/// let inet = try BridgedNamespace.internet(
///   namespace: "hostnat-lab1-inet", address: IPv4Address(192, 0, 2, 1), prefixLength: 24,
///   serverAddresses: [IPv4Address(192, 0, 2, 80)], edge: edge.socket.localAddress)
/// edge.setUplink(inet.underlayAddress, serverIPs: emulatedServerIPs)  // Geneve VNI 2 both ways
/// let vm = try BridgedNamespace.vm(
///   namespace: "hostnat-lab1-vm-a", address: IPv4Address(10, 10, 0, 2), prefixLength: 24,
///   agent: agentUnderlayAddress)                                       // Geneve VNI 1 both ways
/// inet.start(); vm.start()
/// _ = try vm.namespace.exec(["ping", "-c", "3", "192.0.2.80"])
/// vm.shutdown(); inet.shutdown()
/// ```
public final class BridgedNamespace: Sendable {
  public let namespace: NetworkNamespace
  public let device: TUNDevice
  public let socket: UDPSocket
  public let bridge: TUNBridge
  private let isShutDown = Mutex(false)

  /// The bridge's underlay address (what the agent learns a VM by, or the edge's uplink).
  public var underlayAddress: SocketAddress { socket.localAddress }

  init(namespace: NetworkNamespace, device: TUNDevice, socket: UDPSocket, bridge: TUNBridge) {
    self.namespace = namespace
    self.device = device
    self.socket = socket
    self.bridge = bridge
  }

  /// A VM: namespace `namespace` (created; it must not exist), device `deviceName` with
  /// `address/prefixLength`, MTU `mtu` (`PathMTU.vmMTU`), default route through it, bridged with
  /// Geneve VNI 1 to the host agent at `agent`. The bridge is not started.
  public static func vm(
    namespace: String, address: IPv4Address, prefixLength: Int, agent: SocketAddress, mtu: Int = PathMTU.vmMTU,
    deviceName: String = TUNDevice.defaultName, underlayIP: IPv4Address = IPv4Address(127, 0, 0, 1), underlayPort: UInt16 = 0
  ) throws(NetnsError) -> BridgedNamespace {
    try make(
      namespace: namespace, deviceName: deviceName, underlay: SocketAddress(ip: underlayIP, port: underlayPort),
      bridge: TUNBridgeConfiguration(vni: Underlay.overlayVNI, peer: agent, mtu: mtu)
    ) { device throws(NetnsError) in
      try device.configure(address: address, prefixLength: prefixLength, mtu: mtu, routes: [IPv4CIDR(IPv4Address(0), prefixLength: 0)!])
    }
  }

  /// The Internet: namespace `namespace` (created), device with `address/prefixLength` plus every
  /// one of `serverAddresses` (as /32s: the public IPs real servers listen on), MTU `mtu`
  /// (`PathMTU.internetMTU`), and a default route through the device, so replies to NAT IPs go back
  /// to the edge; bridged with Geneve VNI 2 to the edge at `edge` (set the edge's uplink to
  /// `underlayAddress`). The bridge is not started.
  public static func internet(
    namespace: String, address: IPv4Address, prefixLength: Int, serverAddresses: [IPv4Address] = [], edge: SocketAddress,
    mtu: Int = PathMTU.internetMTU, deviceName: String = TUNDevice.defaultName,
    underlayIP: IPv4Address = IPv4Address(127, 0, 0, 1), underlayPort: UInt16 = 0
  ) throws(NetnsError) -> BridgedNamespace {
    try make(
      namespace: namespace, deviceName: deviceName, underlay: SocketAddress(ip: underlayIP, port: underlayPort),
      bridge: TUNBridgeConfiguration(vni: Underlay.internetVNI, peer: edge, mtu: mtu)
    ) { device throws(NetnsError) in
      try device.configure(address: address, prefixLength: prefixLength, mtu: mtu)
      for extra in serverAddresses where extra != address { try device.addAddress(extra, prefixLength: 32) }
      try device.addRoute(IPv4CIDR(IPv4Address(0), prefixLength: 0)!)
    }
  }

  private static func make(
    namespace name: String, deviceName: String, underlay: SocketAddress, bridge configuration: TUNBridgeConfiguration,
    configure: (TUNDevice) throws(NetnsError) -> Void
  ) throws(NetnsError) -> BridgedNamespace {
    let ns = try NetworkNamespace.create(named: name)
    do throws(NetnsError) {
      let device = try TUNDevice(name: deviceName, in: ns)
      try configure(device)
      let socket: UDPSocket
      do {
        socket = try UDPSocket(binding: underlay)
      } catch {
        throw NetnsError(.systemCall, error.description, errno: error.code)
      }
      let bridge = try TUNBridge(device: device, socket: socket, configuration: configuration)
      return BridgedNamespace(namespace: ns, device: device, socket: socket, bridge: bridge)
    } catch {
      try? ns.delete()
      throw error
    }
  }

  public func start() { bridge.start() }

  /// Stops the bridge, closes the socket and the device, deletes the namespace. Idempotent; the
  /// namespace is deleted even when an earlier step failed. Throws only when it could not be deleted.
  public func shutdown(timeout: Duration = .seconds(5)) throws(NetnsError) {
    let first = isShutDown.withLock { done -> Bool in
      defer { done = true }
      return !done
    }
    if first {
      bridge.stop(timeout: timeout)
      socket.close()
      device.close()
    }
    try namespace.delete()
  }
}
