"""Everything that touches TensorFlow lives in this package: conversion, records, tf.data."""
