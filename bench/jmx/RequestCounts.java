// The broker's request counts since it started, one "<request> <count>" line per request
// type (summed over API versions), from kafka.network RequestMetrics RequestsPerSec, then a
// line "." -- printed once for each line read on stdin, so that a caller takes a snapshot at
// the moment it chooses (connected once; a JVM start takes seconds). Java's single-file
// launcher runs it, no build and nothing beyond the JDK:
//   java bench/jmx/RequestCounts.java <port> <user> <password file>
import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Map;
import java.util.TreeMap;
import javax.management.MBeanServerConnection;
import javax.management.ObjectName;
import javax.management.remote.JMXConnector;
import javax.management.remote.JMXConnectorFactory;
import javax.management.remote.JMXServiceURL;

public class RequestCounts {
    public static void main(String[] args) throws Exception {
        String password = Files.readString(Path.of(args[2])).trim();
        JMXServiceURL url = new JMXServiceURL(
                "service:jmx:rmi:///jndi/rmi://127.0.0.1:" + args[0] + "/jmxrmi");
        Map<String, Object> env = Map.of(JMXConnector.CREDENTIALS,
                new String[] {args[1], password});
        try (JMXConnector connector = JMXConnectorFactory.connect(url, env)) {
            MBeanServerConnection server = connector.getMBeanServerConnection();
            ObjectName pattern = new ObjectName(
                    "kafka.network:type=RequestMetrics,name=RequestsPerSec,*");
            BufferedReader in = new BufferedReader(new InputStreamReader(System.in));
            System.out.println("ready");
            System.out.flush();
            while (in.readLine() != null) {
                Map<String, Long> counts = new TreeMap<>();
                for (ObjectName name : server.queryNames(pattern, null)) {
                    long count = ((Number) server.getAttribute(name, "Count")).longValue();
                    counts.merge(name.getKeyProperty("request"), count, Long::sum);
                }
                counts.forEach((request, count) -> System.out.println(request + " " + count));
                System.out.println(".");
                System.out.flush();
            }
        }
    }
}
