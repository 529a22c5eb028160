import HostnatAddressing
internal import Foundation
internal import Glibc
internal import HostnatDataplane
internal import HostnatEngine
internal import HostnatPackets

// The two paths `DataplaneBench` compares. Both start at a client namespace holding a 10.x VM
// address and end at a server namespace holding 192.0.2.80; in between, one NATs with the kernel
// (nftables masquerade in a router namespace), the other with hostnat (TUN bridge, agent, edge,
// uplink bridge). Everything they create lives inside namespaces named PREFIX-..., so deleting the
// namespaces removes every device, route and nft table with them.

/// Runs undo steps in reverse order; used so that a setup failing halfway removes what it made.
final class CleanupStack {
  private var steps: [() -> Void] = []
  func push(_ step: @escaping () -> Void) { steps.append(step) }
  func run() {
    while let step = steps.popLast() { step() }
  }
}

/// One side of the comparison as the generator sees it.
protocol BenchPath: AnyObject {
  var client: NetworkNamespace { get }
  var clientIP: IPv4Address { get }
  var server: NetworkNamespace { get }
  var serverIP: IPv4Address { get }
  /// Stops whatever runs and deletes every namespace (idempotent, never throws: it is called on
  /// error paths). Returns what could not be removed.
  func teardown() -> [String]
}

enum BenchAddresses {
  static let server = IPv4Address(192, 0, 2, 80)
  static let serverGateway = IPv4Address(192, 0, 2, 1)
  static let kernelClient = IPv4Address(10, 30, 0, 2)
  static let kernelRouterInside = IPv4Address(10, 30, 0, 1)
  /// The kernel router's only address toward the servers, so masquerade picks it.
  static let kernelNATIP = IPv4Address(203, 0, 113, 20)
  static let hostnatClient = IPv4Address(10, 10, 0, 2)
  static let hostnatNATIP = IPv4Address(203, 0, 113, 10)
  static let hostnatPorts = 1024..<2048
}

/// Deletes `namespaces` (after the caller closed every socket and device in them); returns the
/// ones that are still there.
func deleteNamespaces(_ namespaces: [NetworkNamespace]) -> [String] {
  var left: [String] = []
  for ns in namespaces {
    do { try ns.delete() } catch { left.append("\(ns): \(error)") }
  }
  return left
}

/// client --veth-- router (ip_forward, nftables masquerade to 203.0.113.20) --veth-- server.
final class KernelNATPath: BenchPath {
  let client: NetworkNamespace
  let router: NetworkNamespace
  let server: NetworkNamespace
  let clientIP = BenchAddresses.kernelClient
  let serverIP = BenchAddresses.server
  private var removed = false

  /// The nft table the router gets (per namespace, so the name need not be unique).
  static let nftTable = "hostnat_bench"

  init(prefix: String) throws(NetnsError) {
    client = try NetworkNamespace(name: prefix + "-kc")
    router = try NetworkNamespace(name: prefix + "-kr")
    server = try NetworkNamespace(name: prefix + "-ks")
    let made = CleanupStack()
    do throws(NetnsError) {
      for ns in [client, router, server] {
        try NetworkNamespace.create(named: ns.name)
        made.push { _ = deleteNamespaces([ns]) }
      }
      try setUp()
    } catch {
      made.run()
      throw error
    }
  }

  private func setUp() throws(NetnsError) {
    // Each veth is born in one namespace with its peer in the next: nothing ever appears in the
    // caller's namespace, and names need only be unique per namespace.
    try client.ip(["link", "add", "bk0", "type", "veth", "peer", "name", "bk1", "netns", router.name])
    try router.ip(["link", "add", "bk2", "type", "veth", "peer", "name", "bk3", "netns", server.name])
    try client.ip(["address", "add", "\(clientIP)/24", "dev", "bk0"])
    try client.ip(["link", "set", "bk0", "up"])
    try client.ip(["route", "add", "default", "via", BenchAddresses.kernelRouterInside.description])
    try router.ip(["address", "add", "\(BenchAddresses.kernelRouterInside)/24", "dev", "bk1"])
    try router.ip(["link", "set", "bk1", "up"])
    try router.ip(["address", "add", "\(BenchAddresses.kernelNATIP)/32", "dev", "bk2"])
    try router.ip(["link", "set", "bk2", "up"])
    try router.ip(["route", "add", "192.0.2.0/24", "dev", "bk2"])
    try server.ip(["address", "add", "\(serverIP)/24", "dev", "bk3"])
    try server.ip(["link", "set", "bk3", "up"])
    try server.ip(["route", "add", "default", "dev", "bk3"])
    try Self.enableForwarding(in: router)
    let rules =
      "add table ip \(Self.nftTable) ; "
      + "add chain ip \(Self.nftTable) post { type nat hook postrouting priority 100 ; policy accept ; } ; "
      + "add rule ip \(Self.nftTable) post oifname \"bk2\" ip saddr 10.0.0.0/8 masquerade"
    let result = try router.exec(["nft", rules])
    guard result.succeeded else { throw NetnsError(.commandFailed, result.description) }
  }

  /// net.ipv4.ip_forward=1 in `namespace`: /proc/sys/net belongs to the namespace of the thread
  /// that opens it, so this needs no sysctl program.
  static func enableForwarding(in namespace: NetworkNamespace) throws(NetnsError) {
    let error: Int32
    do {
      error = try namespace.run { () -> Int32 in
        let fd = open("/proc/sys/net/ipv4/ip_forward", O_WRONLY | O_CLOEXEC)
        guard fd >= 0 else { return errno }
        defer { close(fd) }
        return write(fd, "1\n", 2) == 2 ? 0 : errno
      }
    } catch let e as NetnsError {
      throw e
    } catch {
      throw NetnsError(.systemCall, "\(error)")
    }
    guard error == 0 else { throw NetnsError.system("enable ip_forward in \(namespace)", error) }
  }

  func teardown() -> [String] {
    guard !removed else { return [] }
    removed = true
    return deleteNamespaces([client, router, server])
  }
}

/// client (TUN, Geneve VNI 1) -> agent (NAT 10.10.0.2 -> 203.0.113.10:1024..2047) -> edge ->
/// uplink (Geneve VNI 2, TUN) -> server: the code `hostnat agent` and `hostnat edge` run, in
/// this process.
final class HostnatNATPath: BenchPath {
  let chain: NATChain
  let clientIP = BenchAddresses.hostnatClient
  let serverIP = BenchAddresses.server

  var client: NetworkNamespace { chain.vm.namespace }
  var server: NetworkNamespace { chain.inet.namespace }

  init(prefix: String, batchSize: Int) throws(NetnsError) {
    chain = try NATChain(
      NATChainLayout(
        vmNamespace: prefix + "-hc", internetNamespace: prefix + "-hs", vmAddress: BenchAddresses.hostnatClient,
        natIP: BenchAddresses.hostnatNATIP, natPorts: BenchAddresses.hostnatPorts, internetAddress: BenchAddresses.serverGateway,
        serverAddresses: [BenchAddresses.server], batchSize: batchSize))
  }

  func teardown() -> [String] { chain.shutdown() }

  /// Counters of every piece (for the report of what limited the run).
  func counters() -> HostnatPathCounters {
    HostnatPathCounters(
      vmBridge: chain.vm.bridge.stats(), internetBridge: chain.inet.bridge.stats(), edgeReceived: chain.edge.stats().received,
      edgeUplinkForwarded: chain.edge.stats().uplinkForwarded, agentTranslatedOut: chain.agent.stats().global.translatedOut,
      vmDeviceTxDropped: Self.txDropped(chain.vm))
  }

  /// Packets the client's kernel routed out of its TUN device that the device dropped because the
  /// bridge had not read its queue yet (a TUN device gives the sender no backpressure), from
  /// `ip -s -j link`; nil when unreadable.
  static func txDropped(_ side: BridgedNamespace) -> UInt64? {
    guard let result = try? side.namespace.ip(["-s", "-j", "link", "show", "dev", side.device.name]),
      let list = try? JSONSerialization.jsonObject(with: Data(result.standardOutput.utf8)) as? [[String: Any]],
      let stats = list.first?["stats64"] as? [String: Any], let tx = stats["tx"] as? [String: Any],
      let dropped = tx["dropped"] as? NSNumber
    else { return nil }
    return dropped.uint64Value
  }
}

/// Where packets of the hostnat path went, summed over the run.
public struct HostnatPathCounters: Codable, Sendable, Hashable {
  /// The client's bridge (device -> agent).
  public var vmBridge: TUNBridgeStats
  /// The server's bridge (edge -> device).
  public var internetBridge: TUNBridgeStats
  public var edgeReceived: UInt64
  public var edgeUplinkForwarded: UInt64
  public var agentTranslatedOut: UInt64
  /// Dropped by the client's TUN device (its queue was full: the generator outran the path).
  public var vmDeviceTxDropped: UInt64?
}
