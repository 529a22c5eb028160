/// Something that lives at one or more IPv4 addresses and talks in whole IPv4 packets: an emulated
/// Internet server farm, or a VM's workload. The data-plane loops drive it; it does no I/O and reads
/// time only from its arguments, so tests run it with a manual clock.
///
/// `emit` hands out a packet that is valid only during the call; the loop copies it into its send batch.
public protocol PacketEndpoint: AnyObject {
  /// One IPv4 packet addressed to this endpoint arrived. Replies, if any, go to `emit`.
  func receive(_ packet: UnsafeRawBufferPointer, now: UInt64, emit: (UnsafeRawBufferPointer) -> Void)
  /// Time passed: send what is due (new flows, retransmissions, periodic probes) and expire state.
  func tick(now: UInt64, emit: (UnsafeRawBufferPointer) -> Void)
}
