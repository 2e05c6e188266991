//! A ZMQ message from the node: `block_hash_of` on any parts. Input: parts separated by the
//! byte 0xff (the first part the topic). A `rawblock` hash is the hash of its first 80 bytes
//! as a header (checked against rust-bitcoin); a `hashblock` body is reversed.
#![no_main]
use bitcoin::consensus::encode::deserialize;
use bitcoin::hashes::Hash;
use ckpool::bitcoind::zmq::block_hash_of;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let parts: Vec<Vec<u8>> = data.split(|&b| b == 0xff).map(<[u8]>::to_vec).collect();
    let Some(hash) = block_hash_of(&parts) else { return };
    match parts[0].as_slice() {
        b"rawblock" => {
            let header: bitcoin::block::Header = deserialize(&parts[1][..80]).expect("any 80 bytes are a header");
            assert_eq!(hash, header.block_hash().to_byte_array());
        }
        b"hashblock" => {
            let mut want = parts[1].clone();
            want.reverse();
            assert_eq!(&hash[..], &want[..]);
        }
        other => panic!("a hash from topic {other:?}"),
    }
});
