use embedded_hal::i2c::ErrorKind;
use embedded_hal_mock::eh1::delay::NoopDelay;
use embedded_hal_mock::eh1::i2c::{Mock, Transaction as T};

use super::*;

const ADDR: u8 = DEFAULT_ADDRESS;

/// The datasheet's worked example (BMP280 datasheet 3.12; the BME280 shares the T and P
/// formulas), plus humidity trimming values of the usual size.
fn worked_calibration() -> Calibration {
    Calibration {
        t1: 27504,
        t2: 26435,
        t3: -1000,
        p1: 36477,
        p2: -10685,
        p3: 3024,
        p4: 2855,
        p5: 140,
        p6: -7,
        p7: 15500,
        p8: -14600,
        p9: 6000,
        h1: 75,
        h2: 362,
        h3: 0,
        h4: 324,
        h5: 50,
        h6: 30,
    }
}

/// The calibration registers as the chip sends them.
fn calibration_bytes(c: &Calibration) -> ([u8; 26], [u8; 7]) {
    let mut low = [0u8; 26];
    let words: [u16; 12] = [
        c.t1,
        c.t2 as u16,
        c.t3 as u16,
        c.p1,
        c.p2 as u16,
        c.p3 as u16,
        c.p4 as u16,
        c.p5 as u16,
        c.p6 as u16,
        c.p7 as u16,
        c.p8 as u16,
        c.p9 as u16,
    ];
    for (i, w) in words.iter().enumerate() {
        low[2 * i..2 * i + 2].copy_from_slice(&w.to_le_bytes());
    }
    low[25] = c.h1;
    let h2 = c.h2.to_le_bytes();
    let high = [
        h2[0],
        h2[1],
        c.h3,
        (c.h4 >> 4) as u8,
        ((c.h4 & 0x0f) as u8) | (((c.h5 & 0x0f) as u8) << 4),
        (c.h5 >> 4) as u8,
        c.h6 as u8,
    ];
    (low, high)
}

fn init_transactions(c: &Calibration) -> Vec<T> {
    let (low, high) = calibration_bytes(c);
    vec![
        T::write_read(ADDR, vec![reg::CHIP_ID], vec![CHIP_ID]),
        T::write(ADDR, vec![reg::RESET, reg::SOFT_RESET]),
        T::write_read(ADDR, vec![reg::STATUS], vec![0x01]),
        T::write_read(ADDR, vec![reg::STATUS], vec![0x00]),
        T::write_read(ADDR, vec![reg::CALIB_00], low.to_vec()),
        T::write_read(ADDR, vec![reg::CALIB_26], high.to_vec()),
    ]
}

#[test]
fn temperature_matches_the_datasheet_worked_example() {
    let (t_fine, t) = worked_calibration().temperature(519_888);
    assert_eq!(t_fine, 128_422);
    assert_eq!(t, 2508, "25.08 °C");
}

#[test]
fn pressure_matches_the_datasheet_worked_example() {
    let c = worked_calibration();
    let (t_fine, _) = c.temperature(519_888);
    let pa = f64::from(c.pressure(415_148, t_fine)) / 256.0;
    assert!(
        (pa - 100_653.27).abs() < 0.1,
        "{pa} Pa, datasheet 100653.27 Pa"
    );
}

#[test]
fn humidity_matches_the_datasheets_floating_point_formula() {
    let c = worked_calibration();
    let (t_fine, _) = c.temperature(519_888);
    let rh = f64::from(c.humidity(31_003, t_fine)) / 1024.0;
    // The datasheet's double-precision formula (section 8.1) gives 56.6632 %RH here.
    assert!((rh - 56.6632).abs() < 0.01, "{rh} %RH");
}

#[test]
fn humidity_is_clamped_to_0_to_100_percent() {
    let c = worked_calibration();
    let (t_fine, _) = c.temperature(519_888);
    assert_eq!(c.humidity(0, t_fine), 0);
    assert!(c.humidity(0xffff, t_fine) <= 100 * 1024);
}

#[test]
fn compensation_of_garbage_never_panics() {
    let c = Calibration {
        p1: 1,
        t2: i16::MAX,
        h2: i16::MIN,
        ..worked_calibration()
    };
    for raw in [0, 1, 0xfffff, i32::MAX, i32::MIN] {
        let _ = c.compensate(raw, raw, raw);
    }
    let zero = Calibration::default();
    assert_eq!(zero.pressure(415_148, 0), 0, "division by zero is guarded");
}

#[test]
fn calibration_registers_parse_into_the_trimming_values() {
    let c = worked_calibration();
    let (low, high) = calibration_bytes(&c);
    assert_eq!(Calibration::parse(&low, &high), c);
}

#[test]
fn init_checks_the_chip_id_resets_and_reads_the_calibration() {
    let c = worked_calibration();
    let mut i2c = Mock::new(&init_transactions(&c));
    let sensor = Bme280::new(i2c.clone(), ADDR, &mut NoopDelay).unwrap();
    assert_eq!(sensor.calibration(), &c);
    drop(sensor.release());
    i2c.done();
}

#[test]
fn a_bmp280_or_an_empty_bus_is_refused_by_chip_id_and_the_bus_is_returned() {
    let expectations = [T::write_read(ADDR, vec![reg::CHIP_ID], vec![0x58])];
    let mut i2c = Mock::new(&expectations);
    let Err((err, bus)) = Bme280::new(i2c.clone(), ADDR, &mut NoopDelay) else {
        panic!("a BMP280 is not a BME280");
    };
    assert_eq!(err, Error::WrongChipId(0x58));
    drop(bus);
    i2c.done();
}

#[test]
fn a_bus_error_is_reported_as_such() {
    let expectations =
        [T::write_read(ADDR, vec![reg::CHIP_ID], vec![0]).with_error(ErrorKind::Other)];
    let mut i2c = Mock::new(&expectations);
    let Err((err, _)) = Bme280::new(i2c.clone(), ADDR, &mut NoopDelay) else {
        panic!("expected an error");
    };
    assert_eq!(err, Error::Bus(ErrorKind::Other));
    i2c.done();
}

#[test]
fn configure_then_a_forced_measurement_reads_and_compensates() {
    let c = worked_calibration();
    let mut expectations = init_transactions(&c);
    expectations.extend([
        // ctrl_hum x4, config (standby 1000 ms, filter x4), ctrl_meas x2/x16 sleep.
        T::write(ADDR, vec![reg::CTRL_HUM, 0b011]),
        T::write(ADDR, vec![reg::CONFIG, (0b101 << 5) | (0b010 << 2)]),
        T::write(ADDR, vec![reg::CTRL_MEAS, (0b010 << 5) | (0b101 << 2)]),
        // Forced mode, still measuring once, then done.
        T::write(
            ADDR,
            vec![reg::CTRL_MEAS, (0b010 << 5) | (0b101 << 2) | 0b01],
        ),
        T::write_read(ADDR, vec![reg::STATUS], vec![0x08]),
        T::write_read(ADDR, vec![reg::STATUS], vec![0x00]),
        // adc_P = 415148, adc_T = 519888, adc_H = 31003, as the chip lays them out.
        T::write_read(
            ADDR,
            vec![reg::DATA],
            vec![
                (415_148 >> 12) as u8,
                (415_148 >> 4) as u8,
                ((415_148 & 0xf) << 4) as u8,
                (519_888 >> 12) as u8,
                (519_888 >> 4) as u8,
                ((519_888 & 0xf) << 4) as u8,
                (31_003 >> 8) as u8,
                31_003u16 as u8,
            ],
        ),
    ]);
    let mut i2c = Mock::new(&expectations);
    let mut sensor = Bme280::new(i2c.clone(), ADDR, &mut NoopDelay).unwrap();
    sensor
        .configure(Settings {
            temperature: Oversampling::X2,
            pressure: Oversampling::X16,
            humidity: Oversampling::X4,
            filter: Filter::X4,
            standby: Standby::Ms1000,
        })
        .unwrap();
    let m = sensor.measure_forced(&mut NoopDelay).unwrap();
    assert_eq!(m.temperature_centi_c, 2508);
    assert!(
        (m.pressure_hpa() - 1006.53).abs() < 0.01,
        "{}",
        m.pressure_hpa()
    );
    assert!((m.humidity_percent() - 56.66).abs() < 0.01);
    drop(sensor.release());
    i2c.done();
}

#[test]
fn normal_mode_sets_the_mode_bits() {
    let c = worked_calibration();
    let mut expectations = init_transactions(&c);
    expectations.push(T::write(
        ADDR,
        vec![reg::CTRL_MEAS, (0b001 << 5) | (0b001 << 2) | 0b11],
    ));
    let mut i2c = Mock::new(&expectations);
    let mut sensor = Bme280::new(i2c.clone(), ADDR, &mut NoopDelay).unwrap();
    sensor.start_normal_mode().unwrap();
    drop(sensor.release());
    i2c.done();
}
