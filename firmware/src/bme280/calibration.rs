//! BME280 factory calibration and the datasheet's integer compensation (section 4.2.3).
//!
//! Pure functions, tested against the datasheet's worked values without a bus. Intermediate
//! values are computed in i64 with wrapping arithmetic, so garbage from a faulty bus gives a
//! garbage reading, never an overflow panic; for real readings the results equal the
//! datasheet's 32- and 64-bit code.

/// The trimming parameters read from 0x88..0xA1 and 0xE1..0xE7.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Calibration {
    pub t1: u16,
    pub t2: i16,
    pub t3: i16,
    pub p1: u16,
    pub p2: i16,
    pub p3: i16,
    pub p4: i16,
    pub p5: i16,
    pub p6: i16,
    pub p7: i16,
    pub p8: i16,
    pub p9: i16,
    pub h1: u8,
    pub h2: i16,
    pub h3: u8,
    pub h4: i16,
    pub h5: i16,
    pub h6: i8,
}

impl Calibration {
    /// Parses the 26 bytes from 0x88 and the 7 bytes from 0xE1.
    pub fn parse(low: &[u8; 26], high: &[u8; 7]) -> Self {
        let u16le = |i: usize| u16::from_le_bytes([low[i], low[i + 1]]);
        let i16le = |i: usize| i16::from_le_bytes([low[i], low[i + 1]]);
        Self {
            t1: u16le(0),
            t2: i16le(2),
            t3: i16le(4),
            p1: u16le(6),
            p2: i16le(8),
            p3: i16le(10),
            p4: i16le(12),
            p5: i16le(14),
            p6: i16le(16),
            p7: i16le(18),
            p8: i16le(20),
            p9: i16le(22),
            h1: low[25],
            h2: i16::from_le_bytes([high[0], high[1]]),
            h3: high[2],
            // dig_H4 = 0xE4[11:4] | 0xE5[3:0]; dig_H5 = 0xE6[11:4] | 0xE5[7:4] (signed 12-bit).
            h4: ((i16::from(high[3] as i8)) << 4) | i16::from(high[4] & 0x0f),
            h5: ((i16::from(high[5] as i8)) << 4) | i16::from(high[4] >> 4),
            h6: high[6] as i8,
        }
    }

    /// Compensates raw temperature, pressure and humidity readings.
    pub fn compensate(&self, adc_t: i32, adc_p: i32, adc_h: i32) -> super::Measurement {
        let (t_fine, t) = self.temperature(adc_t);
        super::Measurement {
            temperature_centi_c: t,
            pressure_q24_8: self.pressure(adc_p, t_fine),
            humidity_q22_10: self.humidity(adc_h, t_fine),
        }
    }

    /// `BME280_compensate_T_int32`: returns `(t_fine, hundredths of °C)`.
    pub fn temperature(&self, adc_t: i32) -> (i64, i32) {
        let adc_t = i64::from(adc_t);
        let t1 = i64::from(self.t1);
        let var1 = (((adc_t >> 3) - (t1 << 1)).wrapping_mul(i64::from(self.t2))) >> 11;
        let d = (adc_t >> 4) - t1;
        let var2 = ((d.wrapping_mul(d) >> 12).wrapping_mul(i64::from(self.t3))) >> 14;
        let t_fine = var1.wrapping_add(var2);
        (
            t_fine,
            (t_fine.wrapping_mul(5).wrapping_add(128) >> 8) as i32,
        )
    }

    /// `BME280_compensate_P_int64`: Pa in Q24.8.
    pub fn pressure(&self, adc_p: i32, t_fine: i64) -> u32 {
        let mut var1 = t_fine.wrapping_sub(128_000);
        let mut var2 = var1.wrapping_mul(var1).wrapping_mul(i64::from(self.p6));
        var2 = var2.wrapping_add(var1.wrapping_mul(i64::from(self.p5)) << 17);
        var2 = var2.wrapping_add(i64::from(self.p4) << 35);
        var1 = (var1.wrapping_mul(var1).wrapping_mul(i64::from(self.p3)) >> 8)
            .wrapping_add(var1.wrapping_mul(i64::from(self.p2)) << 12);
        var1 = ((1i64 << 47).wrapping_add(var1)).wrapping_mul(i64::from(self.p1)) >> 33;
        if var1 == 0 {
            return 0; // the datasheet's guard against division by zero
        }
        let mut p = 1_048_576 - i64::from(adc_p);
        p = ((p << 31).wrapping_sub(var2))
            .wrapping_mul(3125)
            .wrapping_div(var1);
        var1 = i64::from(self.p9)
            .wrapping_mul(p >> 13)
            .wrapping_mul(p >> 13)
            >> 25;
        var2 = i64::from(self.p8).wrapping_mul(p) >> 19;
        p = (p.wrapping_add(var1).wrapping_add(var2) >> 8).wrapping_add(i64::from(self.p7) << 4);
        p as u32
    }

    /// `bme280_compensate_H_int32`: %RH in Q22.10.
    pub fn humidity(&self, adc_h: i32, t_fine: i64) -> u32 {
        let adc_h = i64::from(adc_h);
        let v = t_fine.wrapping_sub(76_800);
        let a = ((adc_h << 14) - (i64::from(self.h4) << 20) - i64::from(self.h5).wrapping_mul(v)
            + 16_384)
            >> 15;
        let b = ((((v.wrapping_mul(i64::from(self.h6)) >> 10)
            .wrapping_mul((v.wrapping_mul(i64::from(self.h3)) >> 11) + 32_768))
            >> 10)
            + 2_097_152)
            .wrapping_mul(i64::from(self.h2))
            .wrapping_add(8_192)
            >> 14;
        let mut v = a.wrapping_mul(b);
        v = v.wrapping_sub(
            (((v >> 15).wrapping_mul(v >> 15) >> 7).wrapping_mul(i64::from(self.h1))) >> 4,
        );
        (v.clamp(0, 419_430_400) >> 12) as u32
    }
}
