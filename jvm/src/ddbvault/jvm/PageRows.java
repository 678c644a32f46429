package ddbvault.jvm;

import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.databind.DeserializationFeature;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import org.apache.spark.sql.Row;
import org.apache.spark.sql.RowFactory;
import org.apache.spark.sql.api.java.UDF3;

import java.util.ArrayList;
import java.util.List;

/**
 * Spark SQL function: one staged Scan page (the JSON array of its Items, as DynamoDB sent them) to the vault rows
 * of its items, {@code array<struct<p: string, s: string, i: string, z: bigint, d: bigint>>} (key strings, canonical
 * text, DynamoDB size, digest share). Arguments: the page, the hash key's name, the range key's name (null for none).
 * Registered by {@code ddbvault.vault.staging.register_jvm_codec}.
 */
public final class PageRows implements UDF3<String, String, String, List<Row>> {
    private static final long serialVersionUID = 1L;
    /**
     * Starts every message this function fails with, followed by {@code {"path": ..., "reason": ...}} on the same
     * line, so the driver can tell it from Spark's own failures and name the attribute.
     */
    public static final String MARK = "ddbvault-item-codec: ";
    private static final ObjectMapper JSON = new ObjectMapper()
            .enable(DeserializationFeature.FAIL_ON_TRAILING_TOKENS);

    @Override
    public List<Row> call(String page, String hashKey, String rangeKey) {
        JsonNode items;
        try {
            items = JSON.readTree(page);
        } catch (JsonProcessingException e) {
            throw failure("", "a staged page is not JSON (" + e.getOriginalMessage() + ")", e);
        }
        if (items == null || !items.isArray()) {
            throw failure("", "a staged page is not a JSON array of items", null);
        }
        List<Row> rows = new ArrayList<>(items.size());
        for (int i = 0; i < items.size(); i++) {
            Canonical.Record r;
            try {
                r = Canonical.record(items.get(i), hashKey, rangeKey);
            } catch (Canonical.Invalid e) {
                throw failure(e.path(), e.reason, e);
            }
            rows.add(RowFactory.create(r.pk, r.sk, r.text, r.size, r.digest));
        }
        return rows;
    }

    private static IllegalArgumentException failure(String path, String reason, Exception cause) {
        StringBuilder out = new StringBuilder(MARK).append("{\"path\":");
        Canonical.appendString(out, path);
        out.append(",\"reason\":");
        Canonical.appendString(out, reason);
        return new IllegalArgumentException(out.append('}').toString(), cause);
    }
}
