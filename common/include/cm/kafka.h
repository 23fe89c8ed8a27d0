/*
 * cm/kafka.h — an umbrella over the three Kafka modules, kept only so that
 * files not yet moved to the module headers still build:
 *
 *   cm/producer.h  the idempotent producer
 *   cm/outbox.h    the transactional outbox and its relay
 *   cm/consumer.h  the consumer loop
 *
 * New code includes the module header it uses. What the three share
 * (librdkafka error conversion, configuration) is internal: kafka_int.h.
 */
#ifndef CM_KAFKA_H
#define CM_KAFKA_H

#include "cm/consumer.h"
#include "cm/outbox.h"
#include "cm/producer.h"

#endif
