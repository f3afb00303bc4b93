//! A first look at an SDP offer before the SFU takes it: what a publish or a play needs, and
//! limits no honest client comes near. Refusals say what is wrong.

/// What an offer is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OfferUse {
    /// Sending media to the SFU: some media section must send.
    Publish,
    /// Receiving from the SFU: every media section must be able to receive.
    Play,
}

/// More candidates than this in one offer is not a client trying to connect.
pub const MAX_CANDIDATES: usize = 64;
/// RFC 8839: an ICE username fragment has 4 to 256 characters.
const UFRAG_LENGTHS: std::ops::RangeInclusive<usize> = 4..=256;
/// The fingerprint hashes DTLS here can check.
const FINGERPRINT_HASHES: [&str; 3] = ["sha-256", "sha-384", "sha-512"];

/// One simulcast layer an offer declares with its SSRCs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimulcastSsrc {
    pub mid: String,
    pub rid: String,
    pub ssrc: u32,
    pub rtx: u32,
}

/// The simulcast layers whose SSRCs an offer states: in a media section that sends RIDs
/// (`a=rid:<id> send`) and as many retransmission groups (`a=ssrc-group:FID <main> <rtx>`),
/// paired in order. Browsers state none (their retransmissions carry the RID); encoders that
/// send retransmissions without it do, and without the pairing their repairs would be lost.
pub fn simulcast_ssrcs(offer: &str) -> Vec<SimulcastSsrc> {
    let mut found = Vec::new();
    let mut section = |mid: Option<&str>, rids: &[&str], groups: &[(u32, u32)]| {
        if let Some(mid) = mid
            && rids.len() > 1
            && rids.len() == groups.len()
        {
            found.extend(rids.iter().zip(groups).map(|(rid, &(ssrc, rtx))| SimulcastSsrc {
                mid: mid.to_owned(),
                rid: (*rid).to_owned(),
                ssrc,
                rtx,
            }));
        }
    };
    let (mut mid, mut rids, mut groups) = (None, Vec::new(), Vec::new());
    for line in offer.lines().map(str::trim_end) {
        if line.starts_with("m=") {
            section(mid.take(), &rids, &groups);
            rids.clear();
            groups.clear();
        } else if let Some(m) = line.strip_prefix("a=mid:") {
            mid = Some(m);
        } else if let Some(rid) = line.strip_prefix("a=rid:") {
            let mut words = rid.split_whitespace();
            if let (Some(id), Some("send")) = (words.next(), words.next()) {
                rids.push(id);
            }
        } else if let Some(group) = line.strip_prefix("a=ssrc-group:FID ") {
            let ssrcs: Vec<u32> = group.split_whitespace().filter_map(|s| s.parse().ok()).collect();
            if let [ssrc, rtx] = ssrcs[..] {
                groups.push((ssrc, rtx));
            }
        }
    }
    section(mid, &rids, &groups);
    found
}

/// Checks `offer` for `usage`; the error is a sentence for the client.
pub fn check_offer(offer: &str, usage: OfferUse) -> Result<(), String> {
    let mut candidates = 0;
    let mut sections = 0;
    // The session-level direction applies to sections that state none.
    let mut session_direction = "sendrecv";
    let mut section_direction: Option<&str> = None;
    let mut directions = Vec::new();
    for line in offer.lines().map(str::trim_end) {
        if line.starts_with("m=") {
            if sections > 0 {
                directions.push(section_direction.take());
            }
            sections += 1;
        } else if line.starts_with("a=candidate:") {
            candidates += 1;
            if candidates > MAX_CANDIDATES {
                return Err(format!("the offer has more than {MAX_CANDIDATES} candidates"));
            }
        } else if let Some(ufrag) = line.strip_prefix("a=ice-ufrag:") {
            if !UFRAG_LENGTHS.contains(&ufrag.chars().count()) {
                return Err(format!(
                    "the offer's ICE username fragment has {} characters; 4 to 256 are allowed",
                    ufrag.chars().count()
                ));
            }
        } else if let Some(fingerprint) = line.strip_prefix("a=fingerprint:") {
            let hash = fingerprint.split_whitespace().next().unwrap_or("").to_ascii_lowercase();
            if !FINGERPRINT_HASHES.contains(&hash.as_str()) {
                return Err(format!(
                    "the offer's DTLS fingerprint uses {hash:?}; sha-256, sha-384 or sha-512 are accepted"
                ));
            }
        } else if let Some(direction) = ["sendrecv", "sendonly", "recvonly", "inactive"]
            .into_iter()
            .find(|d| line.strip_prefix("a=") == Some(*d))
        {
            if sections == 0 {
                session_direction = direction;
            } else {
                section_direction = Some(direction);
            }
        }
    }
    if sections > 0 {
        directions.push(section_direction);
    }
    if sections == 0 {
        return Err("the offer has no media sections".into());
    }
    let directions: Vec<&str> = directions.into_iter().map(|d| d.unwrap_or(session_direction)).collect();
    match usage {
        OfferUse::Publish => {
            if !directions.iter().any(|d| matches!(*d, "sendrecv" | "sendonly")) {
                return Err("a publish offer must send media (its sections are recvonly or inactive)".into());
            }
        }
        OfferUse::Play => {
            if let Some(direction) = directions.iter().find(|d| !matches!(**d, "sendrecv" | "recvonly")) {
                return Err(format!("a play offer must receive media; a section is {direction}"));
            }
        }
    }
    Ok(())
}

/// What the relay forwards, for refusals.
pub const SERVED_MEDIA: &str =
    "H.264 (constrained baseline, baseline or main profile, packetization-mode 1) video and Opus audio";

/// Checks the relay's `answer` to an offer: every media section the offer made must have been
/// taken (a section answered with port 0 has no codec the relay forwards). The error is a
/// sentence for the client naming what was refused and what the relay takes.
pub fn check_answer(answer: &str) -> Result<(), String> {
    let mut refused = Vec::new();
    let mut sections = 0;
    for line in answer.lines().map(str::trim_end) {
        if let Some(media) = line.strip_prefix("m=") {
            sections += 1;
            let mut words = media.split_whitespace();
            if let (Some(kind), Some("0")) = (words.next(), words.next()) {
                refused.push(kind.to_owned());
            }
        }
    }
    if sections == 0 {
        return Err("the offer has no media sections the relay can take".into());
    }
    if refused.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "the offer's {} has no codec this server forwards; it takes {SERVED_MEDIA}",
            refused.join(" and ")
        ))
    }
}

/// Makes the relay's answer one that strict stacks accept: its host candidate in every media
/// section that is taken, each followed by `a=end-of-candidates` (the relay gathers nothing
/// more), and no `a=ice-options:trickle` (trickled candidates are refused).
pub fn finish_answer(answer: &str) -> String {
    let candidates: Vec<&str> = answer
        .lines()
        .map(str::trim_end)
        .filter(|line| line.starts_with("a=candidate:"))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut out = String::with_capacity(answer.len() + 256);
    let mut taken = false;
    let finish_section = |out: &mut String, taken: bool| {
        if taken {
            for candidate in &candidates {
                out.push_str(candidate);
                out.push_str("\r\n");
            }
            out.push_str("a=end-of-candidates\r\n");
        }
    };
    let mut in_media = false;
    for line in answer.lines().map(str::trim_end) {
        if line.is_empty()
            || line == "a=ice-options:trickle"
            || line == "a=end-of-candidates"
            || line.starts_with("a=candidate:")
        {
            continue;
        }
        if let Some(media) = line.strip_prefix("m=") {
            if in_media {
                finish_section(&mut out, taken);
            }
            in_media = true;
            taken = media.split_whitespace().nth(1) != Some("0");
        }
        out.push_str(line);
        out.push_str("\r\n");
    }
    if in_media {
        finish_section(&mut out, taken);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simulcast_ssrcs_pair_rids_with_retransmission_groups_in_order() {
        let offer = "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 102\r\na=mid:0\r\n\
            a=ssrc-group:FID 11 12\r\na=ssrc-group:FID 21 22\r\na=ssrc-group:FID 31 32\r\n\
            a=rid:q send\r\na=rid:h send\r\na=rid:f send\r\na=simulcast:send q;h;f\r\n\
            m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:1\r\na=ssrc-group:FID 41 42\r\n";
        let found = simulcast_ssrcs(offer);
        assert_eq!(found.len(), 3);
        assert_eq!(
            found[1],
            SimulcastSsrc {
                mid: "0".into(),
                rid: "h".into(),
                ssrc: 21,
                rtx: 22
            }
        );
        assert!(simulcast_ssrcs("v=0\r\nm=video 9 X 1\r\na=mid:0\r\na=rid:q send\r\na=rid:f send\r\n").is_empty());
    }

    fn offer(directions: &[&str]) -> String {
        let mut sdp = String::from("v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=ice-ufrag:abcd\r\n");
        sdp.push_str("a=fingerprint:sha-256 AA:BB\r\n");
        for direction in directions {
            sdp.push_str(&format!(
                "m=video 9 UDP/TLS/RTP/SAVPF 102\r\na={direction}\r\na=candidate:1 1 udp 1 127.0.0.1 5000 typ host\r\n"
            ));
        }
        sdp
    }

    #[test]
    fn honest_offers_pass_and_odd_ones_are_refused_with_a_reason() {
        assert_eq!(
            check_offer(&offer(&["sendonly", "sendonly"]), OfferUse::Publish),
            Ok(())
        );
        assert_eq!(check_offer(&offer(&["sendrecv"]), OfferUse::Publish), Ok(()));
        assert_eq!(check_offer(&offer(&["recvonly", "recvonly"]), OfferUse::Play), Ok(()));
        assert!(check_offer(&offer(&["recvonly"]), OfferUse::Publish).is_err());
        assert!(check_offer(&offer(&["inactive"]), OfferUse::Publish).is_err());
        assert!(check_offer(&offer(&["recvonly", "sendonly"]), OfferUse::Play).is_err());
        assert!(check_offer("v=0\r\n", OfferUse::Play).is_err(), "no media");
        let many = offer(&["sendonly"]) + &"a=candidate:1 1 udp 1 127.0.0.1 5000 typ host\r\n".repeat(100);
        assert!(
            check_offer(&many, OfferUse::Publish)
                .unwrap_err()
                .contains("candidates")
        );
        let long = offer(&["sendonly"]).replace("a=ice-ufrag:abcd", &format!("a=ice-ufrag:{}", "u".repeat(5000)));
        assert!(
            check_offer(&long, OfferUse::Publish)
                .unwrap_err()
                .contains("username fragment")
        );
        let md5 = offer(&["sendonly"]).replace("sha-256", "md5");
        assert!(
            check_offer(&md5, OfferUse::Publish)
                .unwrap_err()
                .contains("fingerprint")
        );
    }

    const ANSWER: &str = "v=0\r\na=ice-lite\r\nm=video 9 UDP/TLS/RTP/SAVPF 108\r\na=mid:0\r\n\
        a=ice-options:trickle\r\na=candidate:1 1 udp 2130706431 127.0.0.1 7882 typ host\r\na=sendonly\r\n\
        m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:1\r\na=ice-options:trickle\r\na=recvonly\r\n\
        m=video 0 UDP/TLS/RTP/SAVPF 0\r\na=mid:2\r\n";

    #[test]
    fn answers_carry_the_candidate_in_every_taken_section_and_no_trickle() {
        let finished = finish_answer(ANSWER);
        let sections: Vec<&str> = finished.split("m=").skip(1).collect();
        assert_eq!(sections.len(), 3);
        for taken in &sections[..2] {
            assert_eq!(taken.matches("a=candidate:").count(), 1, "{taken}");
            assert!(taken.ends_with("a=end-of-candidates\r\n"), "{taken}");
        }
        assert!(!sections[2].contains("candidate"), "a refused section gets none");
        assert!(!finished.contains("trickle"));
        assert!(finished.starts_with("v=0\r\na=ice-lite\r\n"));
        assert_eq!(finish_answer(&finished), finished, "finishing twice changes nothing");
    }

    #[test]
    fn an_answer_that_refuses_a_section_is_refused_with_what_the_relay_takes() {
        let why = check_answer(ANSWER).unwrap_err();
        assert!(why.contains("video") && why.contains("H.264"), "{why}");
        assert_eq!(check_answer(&ANSWER.replace("m=video 0", "m=video 9")), Ok(()));
        assert!(check_answer("v=0\r\n").is_err());
    }
}
