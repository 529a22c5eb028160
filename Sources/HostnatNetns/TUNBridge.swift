public import HostnatAddressing
internal import Glibc
public import HostnatDataplane
import HostnatPackets
internal import Synchronization

/// How a `TUNBridge` pumps packets.
public struct TUNBridgeConfiguration: Sendable, Hashable {
  /// The Geneve VNI used both ways: `Underlay.overlayVNI` (1) for a VM's interface bridged to its
  /// host agent, `Underlay.internetVNI` (2) for the Internet namespace bridged to the edge.
  public var vni: UInt32
  /// Where packets read from the device go (the agent's or the edge's underlay address).
  public var peer: SocketAddress
  /// The largest packet delivered into the device (the link MTU seen by packets coming toward it);
  /// give the device the same MTU. Bigger packets with DF set are answered with ICMP
  /// fragmentation-needed, bigger ones without DF are fragmented. See `PathMTU` for the values.
  /// At most `PacketBatch.slotSize` - 8 = 2040: an underlay datagram never carries more (a longer
  /// one arrives truncated and is dropped as `malformedUnderlay`).
  public var mtu: Int
  /// Source of the fragmentation-needed errors; nil: the too-big packet's own destination, as if the
  /// host behind the device reported it. That default is what a VM bridge needs: the host agent's
  /// NAT translates an outbound ICMP error only when its source is the VM whose flow it quotes
  /// (RFC 5508 REQ-3), so a router address there would be dropped as unmatched.
  public var icmpSource: IPv4Address?
  /// Packets per recvmmsg/sendmmsg batch.
  public var batchSize: Int
  /// Longest wait for a packet before the loops look at `stop` again.
  public var pollInterval: Duration

  public init(
    vni: UInt32, peer: SocketAddress, mtu: Int = PathMTU.vmMTU, icmpSource: IPv4Address? = nil, batchSize: Int = 64,
    pollInterval: Duration = .milliseconds(50)
  ) {
    self.vni = vni
    self.peer = peer
    self.mtu = mtu
    self.icmpSource = icmpSource
    self.batchSize = batchSize
    self.pollInterval = pollInterval
  }
}

/// Packets a bridge dropped, by reason.
public struct TUNBridgeDrops: Codable, Sendable, Hashable {
  /// Read from the device but not IPv4 (e.g. IPv6 neighbour discovery), or shorter than a header.
  public var notIPv4: UInt64 = 0
  /// Read from the device but too big for one underlay datagram.
  public var tooBigForUnderlay: UInt64 = 0
  /// Could not read from the device.
  public var tunReadFailed: UInt64 = 0
  /// Underlay datagrams that are not Geneve carrying a valid IPv4 packet.
  public var malformedUnderlay: UInt64 = 0
  /// Geneve with a VNI other than the bridge's.
  public var wrongVNI: UInt64 = 0
  /// Bigger than the MTU with DF set (each answered with fragmentation-needed when an ICMP error
  /// may be sent about it: see `fragmentationNeededSent`).
  public var tooBigDontFragment: UInt64 = 0
  /// Bigger than the MTU without DF but not splittable here (IP options).
  public var cannotFragment: UInt64 = 0
  /// The device refused a write (its queue was full, or it is gone).
  public var tunWriteFailed: UInt64 = 0
  /// The kernel refused an underlay datagram.
  public var underlaySendFailed: UInt64 = 0

  public init() {}

  mutating func add(_ o: TUNBridgeDrops) {
    notIPv4 &+= o.notIPv4
    tooBigForUnderlay &+= o.tooBigForUnderlay
    tunReadFailed &+= o.tunReadFailed
    malformedUnderlay &+= o.malformedUnderlay
    wrongVNI &+= o.wrongVNI
    tooBigDontFragment &+= o.tooBigDontFragment
    cannotFragment &+= o.cannotFragment
    tunWriteFailed &+= o.tunWriteFailed
    underlaySendFailed &+= o.underlaySendFailed
  }
}

/// Counters of a bridge, both ways.
public struct TUNBridgeStats: Codable, Sendable, Hashable {
  /// Packets read from the device.
  public var fromTun: UInt64 = 0
  /// Of those, datagrams the kernel took toward the peer.
  public var toPeer: UInt64 = 0
  /// Datagrams received on the underlay socket.
  public var fromUnderlay: UInt64 = 0
  /// Packets delivered into the device (a fragmented packet counts once).
  public var toTun: UInt64 = 0
  /// Fragments written for packets that were split.
  public var fragmentsWritten: UInt64 = 0
  /// ICMP fragmentation-needed errors sent back through the underlay.
  public var fragmentationNeededSent: UInt64 = 0
  public var drops = TUNBridgeDrops()

  public init() {}

  mutating func add(_ o: TUNBridgeStats) {
    fromTun &+= o.fromTun
    toPeer &+= o.toPeer
    fromUnderlay &+= o.fromUnderlay
    toTun &+= o.toTun
    fragmentsWritten &+= o.fragmentsWritten
    fragmentationNeededSent &+= o.fragmentationNeededSent
    drops.add(o.drops)
  }

  var isZero: Bool { self == TUNBridgeStats() }
}

/// Pumps packets between a TUN device and the Geneve underlay: what the namespace's kernel sends
/// out of the device goes to `peer` as Geneve with the bridge's VNI; Geneve datagrams with that
/// VNI arriving on `socket` have their inner IPv4 packet written into the device, subject to the
/// MTU (see `TUNBridgeConfiguration.mtu`). The agent or edge at the other end cannot tell a bridged
/// namespace from an emulated VM or Internet.
///
/// Two threads, one per direction, each bounded in its waits (`pollInterval`), with preallocated
/// batches and buffers: nothing is allocated per packet. Counters are published once per batch.
public final class TUNBridge: Sendable {
  public let device: TUNDevice
  public let socket: UDPSocket
  public let configuration: TUNBridgeConfiguration
  private let peerAddress: Mutex<SocketAddress>
  private let counters = Mutex(TUNBridgeStats())
  private let fromTun = LoopHandle()
  private let toTun = LoopHandle()

  /// The socket's receive timeout becomes `configuration.pollInterval`.
  public init(device: TUNDevice, socket: UDPSocket, configuration: TUNBridgeConfiguration) throws(NetnsError) {
    guard configuration.mtu >= PathMTU.minimumMTU, configuration.mtu <= PacketBatch.slotSize - Geneve.baseHeaderLength else {
      throw NetnsError(
        .unsupported, "bridge MTU \(configuration.mtu) outside \(PathMTU.minimumMTU)...\(PacketBatch.slotSize - Geneve.baseHeaderLength)")
    }
    guard (1...1024).contains(configuration.batchSize) else { throw NetnsError(.unsupported, "batch size \(configuration.batchSize)") }
    do {
      try socket.setReceiveTimeout(configuration.pollInterval)
    } catch {
      throw NetnsError(.systemCall, error.description, errno: error.code)
    }
    self.device = device
    self.socket = socket
    self.configuration = configuration
    peerAddress = Mutex(configuration.peer)
  }

  deinit { stop() }

  /// Where packets from the device go now.
  public var peer: SocketAddress { peerAddress.withLock { $0 } }

  /// Points the bridge at another peer (an agent restarted on a new port).
  public func setPeer(_ address: SocketAddress) { peerAddress.withLock { $0 = address } }

  public func stats() -> TUNBridgeStats { counters.withLock { $0 } }

  /// Starts both threads (no-op when running). A running bridge keeps this object alive: call `stop`.
  public func start() {
    fromTun.start(name: "hn-tun-out") { [self] thread in pumpFromTun(thread) }
    toTun.start(name: "hn-tun-in") { [self] thread in pumpToTun(thread) }
  }

  /// Stops and joins both threads (each bounded by `timeout`; idempotent). Does not close the
  /// device or the socket.
  public func stop(timeout: Duration = .seconds(5)) {
    fromTun.stop(timeout: timeout)
    toTun.stop(timeout: timeout)
  }

  private func publish(_ local: inout TUNBridgeStats) {
    guard !local.isZero else { return }
    let snapshot = local
    counters.withLock { $0.add(snapshot) }
    local = TUNBridgeStats()
  }

  private var pollMilliseconds: Int32 {
    let (s, a) = configuration.pollInterval.components
    return Int32(clamping: max(1, s * 1000 + a / 1_000_000_000_000_000))
  }

  // MARK: - Device -> underlay

  private func pumpFromTun(_ thread: LoopThread) {
    let batch = PacketBatch(capacity: configuration.batchSize)
    let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 65_536, alignment: 16)
    defer { buffer.deallocate() }
    let vni = configuration.vni
    let wait = pollMilliseconds
    var local = TUNBridgeStats()
    while !thread.shouldStop {
      guard device.fileDescriptor >= 0 else { break }
      guard device.waitReadable(timeoutMilliseconds: wait) else { continue }
      let peer = self.peer
      batch.count = 0
      var failed = false
      while !batch.isFull {
        let n: Int
        do {
          n = try device.read(into: buffer)
        } catch {
          local.drops.tunReadFailed &+= 1
          failed = true
          break
        }
        if n == 0 { break }
        local.fromTun &+= 1
        let packet = UnsafeRawBufferPointer(rebasing: buffer[0..<n])
        guard n >= 20, packet[0] >> 4 == 4 else {
          local.drops.notIPv4 &+= 1
          continue
        }
        guard batch.appendGeneve(vni: vni, inner: packet, to: peer) else {
          local.drops.tooBigForUnderlay &+= 1
          continue
        }
      }
      if batch.count > 0 {
        let r = socket.send(batch)
        local.toPeer &+= UInt64(r.sent)
        local.drops.underlaySendFailed &+= UInt64(r.failed)
        batch.count = 0
      }
      publish(&local)
      // A device that errors (removed under us) must not turn this into a busy loop.
      if failed { usleep(UInt32(wait) * 1000) }
    }
    publish(&local)
  }

  // MARK: - Underlay -> device

  private func pumpToTun(_ thread: LoopThread) {
    let batch = PacketBatch(capacity: configuration.batchSize)
    let replies = PacketBatch(capacity: configuration.batchSize)
    let scratch = UnsafeMutableRawBufferPointer.allocate(byteCount: 65_536, alignment: 16)
    defer { scratch.deallocate() }
    let vni = configuration.vni
    let mtu = configuration.mtu
    let icmpSource = configuration.icmpSource
    var local = TUNBridgeStats()

    func flushReplies() {
      guard replies.count > 0 else { return }
      let r = socket.send(replies)
      local.fragmentationNeededSent &+= UInt64(r.sent)
      local.drops.underlaySendFailed &+= UInt64(r.failed)
      replies.count = 0
    }

    while !thread.shouldStop {
      let received: Int
      do {
        received = try socket.receive(into: batch)
      } catch {
        break  // the socket was closed under us
      }
      for i in 0..<received {
        local.fromUnderlay &+= 1
        let datagram = batch.packet(at: i)
        guard let (datagramVNI, headerLength) = Underlay.parse(datagram) else {
          local.drops.malformedUnderlay &+= 1
          continue
        }
        guard datagramVNI == vni else {
          local.drops.wrongVNI &+= 1
          continue
        }
        guard let ip = try? IPv4PacketView(validating: UnsafeMutableRawBufferPointer(rebasing: datagram[headerLength...])) else {
          local.drops.malformedUnderlay &+= 1
          continue
        }
        let packet = UnsafeRawBufferPointer(ip.bytes)
        if packet.count <= mtu {
          if device.write(packet) == 0 { local.toTun &+= 1 } else { local.drops.tunWriteFailed &+= 1 }
          continue
        }
        if ip.dontFragment {
          local.drops.tooBigDontFragment &+= 1
          let source = icmpSource ?? ip.destination
          guard let n = PathMTU.fragmentationNeeded(quoting: packet, nextHopMTU: mtu, source: source, into: scratch) else {
            continue
          }
          if replies.isFull { flushReplies() }
          replies.appendGeneve(vni: vni, inner: UnsafeRawBufferPointer(rebasing: scratch[0..<n]), to: batch.address(at: i))
          continue
        }
        var written = true
        let pieces = PathMTU.fragment(packet, mtu: mtu, scratch: scratch) { fragment in
          if device.write(fragment) != 0 { written = false }
        }
        if let pieces {
          local.fragmentsWritten &+= UInt64(pieces)
          if written { local.toTun &+= 1 } else { local.drops.tunWriteFailed &+= 1 }
        } else {
          local.drops.cannotFragment &+= 1
        }
      }
      flushReplies()
      publish(&local)
    }
    publish(&local)
  }
}
