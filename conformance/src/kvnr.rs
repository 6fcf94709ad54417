//! KVNRs for test members: one capital letter, eight digits and a check digit.

use crate::letter::random;

/// A random valid KVNR.
pub fn random_kvnr() -> Result<String, String> {
    let bytes = random::<9>()?;
    let letter = char::from(b'A' + bytes[0] % 26);
    let digits: String = bytes[1..]
        .iter()
        .map(|b| char::from(b'0' + b % 10))
        .collect();
    let body = format!("{letter}{digits}");
    Ok(format!("{body}{}", check_digit(letter, &digits)))
}

/// The check digit of `letter` followed by the eight `digits`: the letter's two-digit
/// alphabet position and the digits, weighted 1,2,1,2,…, digit sums of the products
/// summed, modulo 10.
fn check_digit(letter: char, digits: &str) -> u32 {
    let position = u32::from(letter) - u32::from('A') + 1;
    let all = format!("{position:02}{digits}");
    let sum: u32 = all
        .chars()
        .filter_map(|c| c.to_digit(10))
        .zip([1, 2].into_iter().cycle())
        .map(|(d, w)| {
            let p = d * w;
            p / 10 + p % 10
        })
        .sum();
    sum % 10
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_kvnr_check_digit() {
        // A123456780 is the demo member of `kvgate init`, valid by the gateway's rule.
        assert_eq!(check_digit('A', "12345678"), 0);
        assert_ne!(check_digit('A', "12345678"), 1);
    }

    #[test]
    fn random_kvnrs_have_the_shape() {
        let k = random_kvnr().unwrap();
        assert_eq!(k.len(), 10);
        assert!(k.as_bytes()[0].is_ascii_uppercase());
    }
}
